"""Every state change of instances, ports and settings goes through a function here.

The control flow (ARCHITECTURE.md, "Desired state, then reconcile"):

  web side (admin actions, signals, code)        worker side (instances/tasks.py)
  instance_create → post_save → instance_provision
  instance_start / _stop / _restart / _recreate   reconcile_instance(pk) → instance_converge
  instances_reconcile (keys or config changed)    reconcile_instance(pk) → instance_converge
  instance_refresh                                observe_instance(pk) → instance_observe
  instance_delete → post_delete → instance_teardown_enqueue
                                                  teardown_instance(name, purge) → instance_teardown
  Celery beat                                     reconcile_all() → instances_reconcile_all

Web-side functions lock the rows, check the transition, save the desired state, record an
Activity and enqueue a task once the transaction commits; they never call an orchestrator.
Worker-side functions hold a per-instance lease (InstanceLease) while they talk to the backend,
and write what they observed.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Q, When
from django.utils import timezone

from orchestrators.base import FinalError, Observed, Orchestrator, TransientError
from orchestrators.base import Status as ObservedStatus

from .models import (
    CONVERGE_FIELDS,
    Activity,
    Instance,
    InstanceLease,
    OrphanWorkload,
    PortAllocation,
)

logger = logging.getLogger(__name__)

SYSTEM = "system"
_actor: contextvars.ContextVar[str] = contextvars.ContextVar("claworc_actor", default=SYSTEM)


# --- Ports --------------------------------------------------------------------------------------

class PortRangeFull(FinalError):
    """No free Chrome/Terminal pair is left in CLAWORC_PORT_START..CLAWORC_PORT_END."""


def _free_even_ports(start: int, end: int, used: set[int]):
    for port in range(start, end, 2):  # the pair needs port+1 <= end
        if port not in used:
            yield port


# Any fixed 64-bit number: the advisory lock that makes PostgreSQL allocations take turns.
_PORTS_LOCK_KEY = 0x636C61776F7263  # "claworc"


def _serialize_port_allocations() -> None:
    # On SQLite the IMMEDIATE transaction already holds the database's write lock. PostgreSQL
    # would let every worker race for the same lowest port; the unique columns keep that correct
    # but a loser can lose again and again, so allocations wait for each other instead.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PORTS_LOCK_KEY])


def ports_allocate(*, instance: Instance, attempts: int = 20) -> PortAllocation:
    """Give `instance` the lowest free even/odd pair; return its existing pair if it has one.

    Allocations take turns (a transaction-scoped lock); the unique columns are the backstop that
    makes a double allocation impossible even so: a loser retries with the next free port.
    """
    existing = PortAllocation.objects.filter(instance=instance).first()
    if existing:
        return existing
    start, end = settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END
    for _ in range(attempts):
        try:
            with transaction.atomic():
                _serialize_port_allocations()
                used = set(
                    PortAllocation.objects.filter(port_chrome__gte=start, port_chrome__lte=end)
                    .values_list("port_chrome", flat=True)
                )
                port = next(_free_even_ports(start, end, used), None)
                if port is None:
                    raise PortRangeFull(
                        f"No free port pair between CLAWORC_PORT_START={start} and "
                        f"CLAWORC_PORT_END={end}; delete an instance or widen the range."
                    )
                return PortAllocation.objects.create(
                    instance=instance, port_chrome=port, port_terminal=port + 1
                )
        except IntegrityError:
            existing = PortAllocation.objects.filter(instance=instance).first()
            if existing:
                return existing
            logger.debug("port %s taken concurrently while allocating for %s", port, instance.name)
    raise PortRangeFull(
        f"Could not allocate a port pair for {instance.name} after {attempts} attempts; "
        "too many concurrent allocations, try again."
    )


def ports_free(*, instance: Instance) -> None:
    PortAllocation.objects.filter(instance=instance).delete()


# --- Who acts, and what was done ----------------------------------------------------------------

@contextlib.contextmanager
def acting_as(actor: str | None) -> Iterator[None]:
    """Attribute what happens inside (including signal-driven provisioning) to `actor`."""
    token = _actor.set(actor or SYSTEM)
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> str:
    return _actor.get()


def activity_record(
    *, instance_name: str, action: str, result: str, message: str = "",
    instance_id: int | None = None, actor: str | None = None,
) -> Activity:
    return Activity.objects.create(
        instance_id=instance_id, instance_name=instance_name, action=action,
        actor=actor or current_actor(), result=result, message=message,
    )


# --- Enqueueing (always after commit: a worker must see the committed row) -----------------------

def _enqueue_reconcile(pk: int) -> None:
    from .tasks import reconcile_instance

    reconcile_instance.delay_on_commit(pk)


def _enqueue_observe(pk: int) -> None:
    from .tasks import observe_instance

    observe_instance.delay_on_commit(pk)


def _enqueue_teardown(name: str, purge_volumes: bool) -> None:
    from .tasks import teardown_instance

    teardown_instance.delay_on_commit(name, purge_volumes)


# --- Web side: change the desired state, record, enqueue ----------------------------------------

@dataclass
class Queued:
    """What a bulk service call queued, and what it skipped with the reason (for message_user)."""

    verb: str
    queued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.queued:
            parts.append(f"Queued {self.verb} of {len(self.queued)} instance"
                         f"{'s' if len(self.queued) != 1 else ''}: {', '.join(self.queued)}.")
        if self.skipped:
            parts.append("Skipped " + "; ".join(f"{n} ({why})" for n, why in self.skipped) + ".")
        return " ".join(parts) or f"Nothing to {self.verb}."


Check = Callable[[Instance], str]  # returns why the transition is refused, "" when allowed


def _change(
    *, instance_ids: Iterable[int], verb: str, action: str, actor: str | None,
    changes: dict, check: Check | None = None, message: str = "",
    enqueue: Callable[[int], None] = _enqueue_reconcile,
) -> Queued:
    """Lock the rows, check each transition, save `changes`, record, enqueue on commit."""
    outcome = Queued(verb=verb)
    actor = actor or current_actor()
    with transaction.atomic():
        rows = list(
            Instance.objects.select_for_update().filter(pk__in=list(instance_ids))
            .only("pk", "name", "status", "desired_state").order_by("pk")
        )
        allowed = []
        for row in rows:
            reason = check(row) if check else ""
            if reason:
                outcome.skipped.append((row.name, reason))
            else:
                allowed.append(row)
        if not allowed:
            return outcome
        if changes:
            Instance.objects.filter(pk__in=[r.pk for r in allowed]).update(**changes)
        Activity.objects.bulk_create(
            Activity(instance_id=r.pk, instance_name=r.name, action=action, actor=actor,
                     result=Activity.Result.QUEUED, message=message)
            for r in allowed
        )
        for row in allowed:
            enqueue(row.pk)
            outcome.queued.append(row.name)
    logger.info("%s queued by %s for %s", action, actor, ", ".join(outcome.queued))
    return outcome


def instance_create(*, display_name: str, name: str = "", actor: str | None = None,
                    **fields) -> Instance:
    """Create and validate an instance; the post_save signal provisions it on commit."""
    with acting_as(actor or current_actor()):
        instance = Instance(display_name=display_name, name=name, **fields)
        instance.full_clean()
        instance.save()
    return instance


def instance_provision(*, instance: Instance) -> None:
    """A new Instance row exists (admin, shell or code): record it and enqueue its creation."""
    activity_record(
        instance_id=instance.pk, instance_name=instance.name, action="create",
        result=Activity.Result.QUEUED,
        message="Provisioning: port pair, four volumes, config file and container.",
    )
    _enqueue_reconcile(instance.pk)


def instance_update(*, instance: Instance, actor: str | None = None, **changes) -> Queued:
    """Change fields of an instance; a change to what it runs with converges the workload."""
    for key, value in changes.items():
        setattr(instance, key, value)
    instance.full_clean()
    with transaction.atomic(), acting_as(actor or current_actor()):
        instance.save(update_fields=[*changes, "updated_at"])  # post_save: instance_saved
    return getattr(instance, "last_converge", None) or Queued(verb="update")


def instance_saved(*, instance: Instance) -> Queued:
    """An existing row was saved (admin, shell, code): converge when what it runs with changed.

    The outcome is left on `instance.last_converge` for the caller that saved it.
    """
    changed = instance.changed_spec_fields()
    instance.remember_saved_spec()
    instance.last_converge = instances_converge_if_changed(instance=instance, changed=changed)
    return instance.last_converge


def instances_converge_if_changed(*, instance: Instance, changed: Iterable[str],
                                  actor: str | None = None) -> Queued:
    """Enqueue a reconcile when any of `changed` (field names) is in CONVERGE_FIELDS."""
    spec_changed = sorted(set(changed) & set(CONVERGE_FIELDS))
    if not spec_changed:
        return Queued(verb="update")
    shown = ", ".join("API keys" if f == "encrypted_api_keys" else f for f in spec_changed)
    return instances_reconcile(
        instance_ids=[instance.pk], actor=actor or current_actor(), action="update",
        message=f"Changed {shown}; converging the workload.",
    )


def instances_reconcile(
    *, instance_ids: Iterable[int], actor: str = SYSTEM, action: str = "reconcile",
    message: str = "",
) -> Queued:
    """Record an Activity per instance and enqueue reconcile_instance(pk) once committed.

    Used after anything the workload is built from changed (global API keys, an override, the
    config): the reconcile converges it (ensure() recreates a Docker container on a new env).
    """
    return _change(instance_ids=instance_ids, verb=action, action=action, actor=actor,
                   changes={}, message=message or "Converging to the current settings.")


def _refuse_if(state: str, status: str, reason: str) -> Check:
    return lambda row: reason if (row.desired_state, row.status) == (state, status) else ""


def instance_start(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    return _change(
        instance_ids=instance_ids, verb="start", action="start", actor=actor,
        changes={"desired_state": Instance.DesiredState.RUNNING},
        check=_refuse_if(Instance.DesiredState.RUNNING, Instance.Status.RUNNING,
                         "already running"),
    )


def instance_stop(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    return _change(
        instance_ids=instance_ids, verb="stop", action="stop", actor=actor,
        changes={"desired_state": Instance.DesiredState.STOPPED,
                 "requested_action": Instance.RequestedAction.NONE},
        check=_refuse_if(Instance.DesiredState.STOPPED, Instance.Status.STOPPED,
                         "already stopped"),
    )


def instance_restart(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    """Restart the workload; a stopped instance is started (its desired state becomes running)."""
    return _change(
        instance_ids=instance_ids, verb="restart", action="restart", actor=actor,
        changes={"desired_state": Instance.DesiredState.RUNNING,
                 "requested_action": Instance.RequestedAction.RESTART},
    )


def instance_recreate(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    """Replace the workload with one built from the current spec; volumes persist."""
    return _change(
        instance_ids=instance_ids, verb="recreate", action="recreate", actor=actor,
        changes={"desired_state": Instance.DesiredState.RUNNING,
                 "requested_action": Instance.RequestedAction.RECREATE},
    )


def instance_refresh(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    """Read the workload's state again (no change is made to it)."""
    return _change(instance_ids=instance_ids, verb="status refresh", action="refresh",
                   actor=actor, changes={}, enqueue=_enqueue_observe)


def instance_delete(*, instance_ids: Iterable[int], keep_volumes: bool,
                    actor: str | None = None) -> Queued:
    """Delete the rows; post_delete enqueues the teardown (volumes kept when `keep_volumes`)."""
    outcome = Queued(verb="deletion (volumes kept)" if keep_volumes else "deletion")
    with acting_as(actor or current_actor()), transaction.atomic():
        rows = list(Instance.objects.select_for_update().filter(pk__in=list(instance_ids)))
        for row in rows:
            row.keep_volumes = keep_volumes
            row.delete()  # post_delete → instance_teardown_enqueue, with the flag above
            outcome.queued.append(row.name)
    return outcome


def instance_teardown_enqueue(*, name: str, purge_volumes: bool) -> None:
    """An Instance row was deleted (ports went with it): remove its workload after commit."""
    activity_record(
        instance_name=name, action="delete", result=Activity.Result.QUEUED,
        message="Removing container, config directory"
        + (" and the four volumes." if purge_volumes else "; the volumes are kept."),
    )
    _enqueue_teardown(name, purge_volumes)


# --- Worker side: the per-instance lease --------------------------------------------------------

class LeaseBusy(TransientError):
    """Another worker is acting on this instance right now; try again in `retry_in` seconds."""

    def __init__(self, message: str, *, retry_in: float = 1.0):
        super().__init__(message)
        self.retry_in = retry_in


RECONCILE_ALL_LEASE = "*reconcile-all*"  # not a DNS label, so never an instance name


def lease_ttl() -> timedelta:
    # Longer than the hard time limit: a task never outlives its lease, and a killed worker's
    # lease frees itself soon after.
    return timedelta(seconds=settings.CLAWORC_TASK_TIME_LIMIT + 10)


def lease_owner(task_id: str | None = None) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{task_id or '-'}"


def lease_acquire(*, name: str, owner: str, ttl: timedelta | None = None) -> bool:
    """Take the lease on `name` unless someone else holds an unexpired one. Autocommit only."""
    now = timezone.now()
    expires = now + (ttl or lease_ttl())
    taken = InstanceLease.objects.filter(
        Q(expires_at__lt=now) | Q(owner=owner), name=name
    ).update(owner=owner, expires_at=expires)
    if taken:
        return True
    try:
        with transaction.atomic():
            InstanceLease.objects.create(name=name, owner=owner, expires_at=expires)
    except IntegrityError:
        return False
    return True


def lease_release(*, name: str, owner: str) -> None:
    InstanceLease.objects.filter(name=name, owner=owner).delete()


@contextlib.contextmanager
def instance_lease(*, name: str, owner: str) -> Iterator[None]:
    if not lease_acquire(name=name, owner=owner):
        expires = InstanceLease.objects.filter(name=name).values_list(
            "expires_at", flat=True).first()
        wait = (expires - timezone.now()).total_seconds() if expires else 0.0
        raise LeaseBusy(f"{name} is being changed by another worker; will try again",
                        retry_in=max(1.0, wait))
    try:
        yield
    finally:
        lease_release(name=name, owner=owner)


# --- Worker side: converge one instance ---------------------------------------------------------

# What a person should look at, per backend; data rather than `if backend == ...` branches.
_LOG_HINTS = {
    "docker": "Check `docker logs {name}` for errors.",
    "kubernetes": "Check `kubectl logs deployment/{name}` for errors.",
}


def troubleshooting_message(*, orch: Orchestrator | None, name: str, error: str) -> str:
    """`error` followed by the hints of the Docker backend spec's Troubleshooting section."""
    low = error.lower()
    hints = []
    if "privileged" in low or "unable to apply caps" in low:
        hints.append(
            "The agent image requires --privileged mode: make sure the Docker host allows "
            "privileged containers (Docker Desktop must not disable them); on hosts that refuse "
            "them set CLAWORC_DOCKER_PRIVILEGED=false."
        )
    if "port" in low and any(w in low for w in ("in use", "already allocated", "address already")):
        hints.append(
            "A port is already in use: Claworc allocates ports from CLAWORC_PORT_START to "
            f"CLAWORC_PORT_END ({settings.CLAWORC_PORT_START}–{settings.CLAWORC_PORT_END}); "
            "ensure this range is free, then restart the instance."
        )
    log_hint = _LOG_HINTS.get(getattr(orch, "backend_name", ""), "").format(name=name)
    if log_hint and log_hint.split("`")[1] not in error:
        hints.append(log_hint)
    return " ".join([error.strip(), *hints])


def _status_write(*, pk: int, status: str, message: str, now: datetime | None = None) -> None:
    now = now or timezone.now()
    Instance.objects.filter(pk=pk).update(
        status=status, status_message=message, status_observed_at=now,
        status_since=Case(When(~Q(status=status), then=now), default=F("status_since")),
    )


def _observed_fields(observed: Observed) -> tuple[str, str]:
    """Status and a stable message: a backend's "Up 3 minutes" would change at every look."""
    code = observed.exit_code
    if observed.status == ObservedStatus.RUNNING:
        return str(observed.status), ""
    if observed.status == ObservedStatus.STOPPED:
        if not observed.exists:
            return str(observed.status), "No workload exists."
        return str(observed.status), "Stopped." if code is None else f"Stopped (exit code {code})."
    if observed.status == ObservedStatus.CREATING:
        return str(observed.status), (
            "Starting." if code is None else f"Restarting after exit code {code}.")
    return str(observed.status), observed.message


def instance_converge(*, pk: int, owner: str, last_attempt: bool = True) -> str:
    """Make instance `pk`'s workload match its desired state with the smallest change.

    Returns what happened in a few words. LeaseBusy and TransientError propagate for the task to
    retry, except on the last attempt, when the transient error is written as `error`.
    """
    name = Instance.objects.filter(pk=pk).values_list("name", flat=True).first()
    if name is None:
        return "gone"
    with instance_lease(name=name, owner=owner):
        instance = Instance.objects.filter(pk=pk).first()
        if instance is None:
            return "gone"
        return _converge_locked(instance, last_attempt=last_attempt)


def _converge_locked(instance: Instance, *, last_attempt: bool) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    from orchestrators.registry import get_orchestrator

    from .specs import instance_spec

    requested = instance.requested_action
    orch = None
    try:
        orch = get_orchestrator()
        if instance.desired_state == Instance.DesiredState.RUNNING:
            spec = instance_spec(instance, privileged=orch.privileged)
            if requested == Instance.RequestedAction.RECREATE:
                observed = orch.recreate(spec)
            else:
                observed = orch.ensure(spec)
                if requested == Instance.RequestedAction.RESTART:
                    observed = orch.restart(instance.name)
        else:
            observed = orch.stop(instance.name)
    except SoftTimeLimitExceeded:
        error = TransientError(
            f"Timed out after {settings.CLAWORC_TASK_TIME_LIMIT} s waiting for the orchestrator."
        )
        return _converge_failed(instance, orch, error, last_attempt=last_attempt)
    except (FinalError, TransientError) as exc:
        return _converge_failed(instance, orch, exc, last_attempt=last_attempt)

    status, message = _observed_fields(observed)
    _status_write(pk=instance.pk, status=status, message=message)
    _requested_clear(instance, requested)
    what = requested or ("ensure" if instance.desired_state == "running" else "stop")
    activity_record(
        instance_id=instance.pk, instance_name=instance.name, action=what,
        result=Activity.Result.OK, actor=SYSTEM,
        message=f"Now {status}." + (f" {message}" if message else ""),
    )
    logger.info("reconciled %s: %s, now %s", instance.name, what, status)
    return status


def _requested_clear(instance: Instance, requested: str) -> None:
    if requested:
        # Only the request we acted on: one made meanwhile stays for the next run.
        Instance.objects.filter(pk=instance.pk, requested_action=requested).update(
            requested_action=Instance.RequestedAction.NONE
        )


def _converge_failed(instance: Instance, orch, exc: Exception, *, last_attempt: bool) -> str:
    transient = isinstance(exc, TransientError)
    if transient and not last_attempt:
        logger.warning("reconcile of %s failed, will retry: %s", instance.name, exc)
        raise exc
    if transient:
        # Not `error`: nothing is wrong with the instance itself, and reconcile_all keeps trying
        # (a "creating" one still turns into `error` at CLAWORC_CREATING_TIMEOUT).
        text = f"{exc} Claworc keeps trying at every periodic reconcile."
        Instance.objects.filter(pk=instance.pk).update(status_message=text)
    else:
        text = troubleshooting_message(orch=orch, name=instance.name, error=str(exc))
        _requested_clear(instance, instance.requested_action)
        _status_write(pk=instance.pk, status=Instance.Status.ERROR, message=text)
    activity_record(instance_id=instance.pk, instance_name=instance.name, action="reconcile",
                    result=Activity.Result.ERROR, actor=SYSTEM, message=text)
    logger.error("reconcile of %s failed: %s", instance.name, text)
    return "error"


def instance_observe(*, pk: int, owner: str) -> str:
    """Read one instance's workload state and write it (the admin's "refresh status")."""
    from orchestrators.registry import get_orchestrator

    name = Instance.objects.filter(pk=pk).values_list("name", flat=True).first()
    if name is None:
        return "gone"
    if not lease_acquire(name=name, owner=owner):
        return "busy"  # whoever holds it writes a fresher status when done
    try:
        orch = get_orchestrator()
        try:
            observed = orch.status(name)
        except (FinalError, TransientError) as exc:
            text = troubleshooting_message(orch=orch, name=name, error=str(exc))
            activity_record(instance_id=pk, instance_name=name, action="refresh",
                            result=Activity.Result.ERROR, actor=SYSTEM, message=text)
            return "error"
        status, message = _observed_fields(observed)
        _status_write(pk=pk, status=status, message=message)
        activity_record(instance_id=pk, instance_name=name, action="refresh",
                        result=Activity.Result.OK, actor=SYSTEM, message=f"Observed {status}.")
        return status
    finally:
        lease_release(name=name, owner=owner)


def instance_teardown(*, name: str, purge_volumes: bool, owner: str,
                      last_attempt: bool = True) -> str:
    """Remove a deleted instance's workload and config (and volumes when `purge_volumes`)."""
    from orchestrators.registry import get_orchestrator

    with instance_lease(name=name, owner=owner):
        if Instance.objects.filter(name=name).exists():
            # A new instance took the name meanwhile: its workload is not ours to remove.
            activity_record(instance_name=name, action="delete", result=Activity.Result.INFO,
                            actor=SYSTEM,
                            message="Skipped: a new instance with this name exists now.")
            return "skipped"
        orch = None
        try:
            orch = get_orchestrator()
            orch.delete(name, purge_volumes=purge_volumes)
        except (FinalError, TransientError) as exc:
            if isinstance(exc, TransientError) and not last_attempt:
                raise
            text = troubleshooting_message(orch=orch, name=name, error=str(exc))
            activity_record(instance_name=name, action="delete", result=Activity.Result.ERROR,
                            actor=SYSTEM, message=text)
            logger.error("teardown of %s failed: %s", name, text)
            return "error"
    OrphanWorkload.objects.filter(name=name).delete()
    done = "Removed the container, config directory" + (
        " and volumes." if purge_volumes else "; the volumes were kept.")
    activity_record(instance_name=name, action="delete", result=Activity.Result.OK,
                    actor=SYSTEM, message=done)
    logger.info("tore down %s (purge_volumes=%s)", name, purge_volumes)
    return "deleted"


# --- Worker side: reconcile every instance (Celery beat) ----------------------------------------

#: Exit codes of a container stopped by a signal (SIGTERM via `docker stop`, SIGKILL): a stop
#: from outside Claworc, to be undone. Any other non-zero code is a crash, shown as `error`.
STOP_EXIT_CODES = frozenset({0, 128 + 9, 128 + 15})
LOG_TAIL_LINES = 20


@dataclass
class ReconcileAllReport:
    observed: int = 0
    status_changes: int = 0
    repairs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    def __str__(self):
        return (f"{self.observed} observed, {self.status_changes} status changes, "
                f"{len(self.repairs)} repairs, {len(self.errors)} new errors, "
                f"{len(self.orphans)} orphans")


def _age(row: dict, now: datetime) -> float:
    since = row["status_since"] or row["created_at"]
    return (now - since).total_seconds()


def instances_reconcile_all(*, owner: str) -> ReconcileAllReport | None:
    """Observe every instance with ONE list call, write statuses in bulk and repair drift.

    None when another reconcile_all holds the lease. TransientError propagates (the backend is
    unreachable: nothing is written, the next beat tries again).
    """
    from orchestrators.registry import get_orchestrator

    if not lease_acquire(name=RECONCILE_ALL_LEASE, owner=owner):
        logger.info("reconcile_all already running elsewhere; skipped")
        return None
    try:
        orch = get_orchestrator()
        return _reconcile_all_locked(orch)
    finally:
        lease_release(name=RECONCILE_ALL_LEASE, owner=owner)


def _reconcile_all_locked(orch: Orchestrator) -> ReconcileAllReport:
    started = timezone.now()
    rows = list(Instance.objects.values(
        "pk", "name", "desired_state", "status", "status_message", "status_since", "created_at",
        "requested_action",
    ))
    observed = orch.status_all()
    now = timezone.now()
    busy = set(InstanceLease.objects.filter(expires_at__gt=now).values_list("name", flat=True))
    report = ReconcileAllReport(observed=len(observed))
    timeout = settings.CLAWORC_CREATING_TIMEOUT
    updates: dict[int, tuple[str, str]] = {}
    activities: list[Activity] = []
    to_enqueue: list[int] = []

    def note(row, action, result, message):
        activities.append(Activity(instance_id=row["pk"], instance_name=row["name"], actor=SYSTEM,
                                   action=action, result=result, message=message))

    for row in rows:
        name = row["name"]
        if name in busy:
            continue  # a worker is acting on it and writes a fresher status
        obs = observed.get(name)
        current = (row["status"], row["status_message"])
        new = current
        if row["desired_state"] == Instance.DesiredState.RUNNING:
            new = _running_wanted(orch, row, obs, now, timeout, report, note, to_enqueue)
        elif obs is not None and obs.status in (ObservedStatus.RUNNING, ObservedStatus.CREATING):
            new = (str(obs.status), "Started outside Claworc; stopping it.")
            note(row, "drift", Activity.Result.INFO,
                 f"{name} was running although its desired state is stopped; stopping it.")
            report.repairs.append(name)
            to_enqueue.append(row["pk"])
        elif obs is not None:
            new = _observed_fields(obs)
        else:
            new = (Instance.Status.STOPPED, "No workload exists.")
        if row["requested_action"] and row["pk"] not in to_enqueue:
            to_enqueue.append(row["pk"])  # a restart/recreate whose task was lost
        if new is not None and new != current:
            updates[row["pk"]] = new

    _statuses_write_bulk(rows, updates, started=started, now=now)
    report.status_changes = len(updates)
    report.orphans = _orphans_report(orch, rows, observed, orch.volumes_all(), busy, now)
    Activity.objects.bulk_create(activities)
    for pk in to_enqueue:
        _enqueue_reconcile(pk)
    logger.info("reconcile_all on %s: %s", orch.backend_name, report)
    return report


def _running_wanted(orch, row, obs, now, timeout, report, note, to_enqueue):
    """The new (status, message) of an instance meant to run, noting repairs; None = unchanged."""
    name, status = row["name"], row["status"]
    if status == Instance.Status.ERROR and (obs is None or obs.status != ObservedStatus.RUNNING):
        return None  # a person must act (the message says what); retrying would hide it
    if status == Instance.Status.CREATING and _age(row, now) > timeout:
        detail = obs.message if obs is not None and obs.message else (
            "no workload exists: is a Celery worker running and able to reach the backend?"
            if obs is None else f"the workload is {obs.status}")
        text = troubleshooting_message(
            orch=orch, name=name,
            error=f"Still creating after {timeout} s (CLAWORC_CREATING_TIMEOUT): {detail}.")
        note(row, "timeout", Activity.Result.ERROR, text)
        report.errors.append(name)
        return (Instance.Status.ERROR, text)
    if obs is None:
        to_enqueue.append(row["pk"])
        if status == Instance.Status.CREATING:
            return None  # its creation is queued or in flight
        note(row, "drift", Activity.Result.INFO,
             f"The workload of {name} is missing (removed outside Claworc); recreating it.")
        report.repairs.append(name)
        return (Instance.Status.CREATING, "Recreating: the workload was removed outside Claworc.")
    crashed = obs.exit_code is not None and obs.exit_code not in STOP_EXIT_CODES
    # A restart policy makes a crashing container "restarting": still a crash, shown at once.
    if obs.status == ObservedStatus.STOPPED or (obs.status == ObservedStatus.CREATING and crashed):
        if crashed:
            try:
                tail = orch.logs(name, lines=LOG_TAIL_LINES).strip()
            except (FinalError, TransientError):
                tail = obs.log_tail.strip()
            text = troubleshooting_message(
                orch=orch, name=name, error=f"Exited with code {obs.exit_code}."
                + (f" Last log lines:\n{tail}\n" if tail else ""))
            note(row, "crash", Activity.Result.ERROR, text)
            report.errors.append(name)
            return (Instance.Status.ERROR, text)
        to_enqueue.append(row["pk"])
        if status == Instance.Status.CREATING:
            return None
        note(row, "drift", Activity.Result.INFO,
             f"{name} was stopped outside Claworc (exit code {obs.exit_code}); starting it.")
        report.repairs.append(name)
        return (Instance.Status.CREATING, "Starting: it was stopped outside Claworc.")
    return _observed_fields(obs)


def _statuses_write_bulk(rows, updates, *, started: datetime, now: datetime) -> None:
    """Write changed statuses in one statement and bump everyone's observed time in another.

    A row written by a worker since `started` is newer than what we saw: left alone.
    """
    untouched = Q(status_observed_at__isnull=True) | Q(status_observed_at__lt=started)
    with transaction.atomic():
        fresh = set(
            Instance.objects.select_for_update().filter(untouched, pk__in=list(updates))
            .values_list("pk", flat=True)
        ) if updates else set()
        before = {r["pk"]: r for r in rows}
        objs = []
        for pk, (status, message) in updates.items():
            if pk in fresh:
                # status_since moves only with the status: the "creating" timeout runs from it.
                since = before[pk]["status_since"] if before[pk]["status"] == status else now
                objs.append(Instance(pk=pk, status=status, status_message=message,
                                     status_observed_at=now, status_since=since))
        if objs:
            Instance.objects.bulk_update(
                objs, ["status", "status_message", "status_observed_at", "status_since"],
                batch_size=500,
            )
        same = [r["pk"] for r in rows if r["pk"] not in updates]
        if same:
            Instance.objects.filter(untouched, pk__in=same).update(status_observed_at=now)


def _orphans_report(orch, rows, observed, volumes, busy, now) -> list[str]:
    """Managed workloads, or volumes, with no Instance row: listed in OrphanWorkload, never
    deleted."""
    known = {r["name"] for r in rows}
    candidates = {n: (str(o.status), o.message) for n, o in observed.items()}
    for name, names in volumes.items():
        # Volumes kept by "delete keeping volumes", or left by a teardown that failed half-way.
        candidates.setdefault(name, (
            "volumes only",
            f"{len(names)} volume(s) with no container: {', '.join(names)}. Create an instance "
            f"named {name} to use them again, or remove them by hand.",
        ))
    candidates = {n: c for n, c in candidates.items() if n not in known and n not in busy}
    if candidates:
        # A row deleted a moment ago whose teardown has not run yet is not an orphan.
        recent = set(Activity.objects.filter(
            instance_name__in=list(candidates), action="delete",
            created_at__gte=now - lease_ttl(),
        ).values_list("instance_name", flat=True))
        candidates = {n: c for n, c in candidates.items() if n not in recent}
    existing = set(OrphanWorkload.objects.filter(name__in=list(candidates))
                   .values_list("name", flat=True))
    new = []
    for name, (status, message) in candidates.items():
        OrphanWorkload.objects.update_or_create(
            name=name, defaults={"backend": orch.backend_name, "status": status,
                                 "message": message, "last_seen": now})
        if name not in existing:
            new.append(name)
    OrphanWorkload.objects.filter(backend=orch.backend_name).exclude(
        name__in=list(candidates)).delete()
    Activity.objects.bulk_create(
        Activity(instance_name=name, action="orphan", actor=SYSTEM, result=Activity.Result.ERROR,
                 message=f"{name} is labelled managed-by=claworc on {orch.backend_name} but no "
                 "instance has this name. Claworc leaves it in place: delete it by hand if it "
                 "is not needed, or create an instance with this name to adopt it.")
        for name in new
    )
    for name in new:
        logger.warning("orphan %s on %s has no instance", name, orch.backend_name)
    return sorted(candidates)
