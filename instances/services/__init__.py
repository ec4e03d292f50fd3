"""Every state change of instances, ports and settings goes through a function here.

The control flow (ARCHITECTURE.md, "Desired state, then reconcile"), one module per job:

  web side (intents.py)                          worker side (tasks.py → converge.py)
  instance_create → post_save → instance_provision
  instance_start / _stop / _restart / _recreate   reconcile_instance(pk) → instance_converge
  instances_reconcile (keys or config changed)    reconcile_instance(pk) → instance_converge
  instance_refresh                                observe_instance(pk) → instance_observe
  instance_delete (row stays `deleting`)        reconcile_instance(pk) → instance_converge
                                                  (tears down, then removes the row)
  Celery beat                                     reconcile_all() → instances_reconcile_all
                                                  (reconcile_all.py)

- `intents`: web side. Lock the rows, check the transition, save the desired state, record an
  Activity and enqueue a task once the transaction commits; never call an orchestrator.
- `converge`, `reconcile_all`: worker side. Hold a per-instance lease (`leases`) while talking
  to the backend, and write what was observed.
- `capacity`: the budget a create, start or resize must fit (docs/capacity.md), checked in the
  intents' transactions.
- `ports`: the port pair of an instance. `audit`: who acts, and the Activity records.
- `liveness`: worker heartbeats, and what /health makes of them with the owed work.

Callers import the package (`from instances import services`); the names below are its API.
"""

from .audit import SYSTEM, acting_as, activity_record, current_actor
from .capacity import CapacityExceeded
from .converge import (
    instance_converge,
    instance_observe,
    instance_teardown,
    troubleshooting_message,
)
from .intents import (
    PENDING_NOTE,
    Queued,
    StaleWrite,
    collecting_unsent,
    instance_create,
    instance_delete,
    instance_provision,
    instance_recreate,
    instance_refresh,
    instance_restart,
    instance_saved,
    instance_start,
    instance_stop,
    instance_teardown_enqueue,
    instance_update,
    instances_converge_if_changed,
    instances_reconcile,
    stale_check,
)
from .leases import (
    RECONCILE_ALL_LEASE,
    LeaseBusy,
    instance_lease,
    lease_acquire,
    lease_owner,
    lease_release,
    lease_ttl,
    leases_held,
)
from .liveness import Liveness, liveness
from .ports import PortRangeFull, ports_allocate, ports_free
from .reconcile_all import (
    STOP_EXIT_CODES,
    ReconcileAllReport,
    enqueue_grace,
    instances_reconcile_all,
)

__all__ = [
    "RECONCILE_ALL_LEASE", "STOP_EXIT_CODES", "SYSTEM", "CapacityExceeded", "LeaseBusy",
    "PortRangeFull", "Queued",
    "ReconcileAllReport", "acting_as", "activity_record", "current_actor", "instance_converge",
    "instance_create", "instance_delete", "instance_lease", "instance_observe",
    "instance_provision", "instance_recreate", "instance_refresh", "instance_restart",
    "instance_saved", "instance_start", "instance_stop", "instance_teardown",
    "instance_update", "instance_teardown_enqueue", "PENDING_NOTE", "StaleWrite",
    "collecting_unsent", "stale_check",
    "leases_held", "enqueue_grace", "Liveness", "liveness", "instances_converge_if_changed",
    "instances_reconcile", "instances_reconcile_all", "lease_acquire", "lease_owner",
    "lease_release", "lease_ttl", "ports_allocate", "ports_free", "troubleshooting_message",
]
