"""Celery tasks: thin wrappers that take ids and plain strings and call a service.

Every task is idempotent (the orchestrator's operations are), so `acks_late` is safe: a task
whose worker died may be delivered again and finishes the job. Delivery is an optimisation, not
the mechanism: what is owed is in the database, and reconcile_all sends it again (see
services/reconcile_all.py). Transient orchestrator errors are retried with exponential backoff
and jitter; waiting for another worker's lease has a retry budget of its own.
"""

from __future__ import annotations

import logging
import random

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from orchestrators.base import TransientError

from . import services
from .metrics import CONVERGE_SECONDS, RECONCILE_ALL_SECONDS

logger = logging.getLogger(__name__)

HARD_LIMIT = settings.CLAWORC_TASK_TIME_LIMIT
# The soft limit raises inside the task, which then records why it stopped and frees its lease.
SOFT_LIMIT = max(HARD_LIMIT - 10, int(HARD_LIMIT * 0.8))

#: Retries of a transient backend error (daemon unreachable, timeout), at most 60 s apart.
BACKEND_RETRIES = 8
#: Waits for another worker's lease; they never use up the backend retries above.
LEASE_WAIT_RETRIES = 60

_per_instance = {
    "bind": True,
    "acks_late": True,
    # A worker killed mid-task (OOM) hands the message back; the instance's own count of lost
    # workers (Instance.worker_losses) caps how often, then records an error.
    "reject_on_worker_lost": True,
    "soft_time_limit": SOFT_LIMIT,
    "time_limit": HARD_LIMIT,
}


def _last_attempt(task) -> bool:
    return task.request.retries >= task.max_retries


def _run(task, call, *, lease_waits: int):
    """Call the service; retry a busy lease and transient errors on separate budgets."""
    backend_retries = task.request.retries - lease_waits
    try:
        return call(last_attempt=backend_retries >= BACKEND_RETRIES)
    except services.LeaseBusy as busy:
        if lease_waits >= LEASE_WAIT_RETRIES:
            logger.warning("%s; giving up waiting, reconcile_all sends it again", busy)
            return "busy"
        # Retry about when the holder's lease ends (it usually ends much sooner, on release).
        countdown = min(busy.retry_in, 30.0) * random.uniform(0.2, 1.0)
        logger.info("%s; retrying in %.1f s", busy, countdown)
        kwargs = {**(task.request.kwargs or {}), "lease_waits": lease_waits + 1}
        raise task.retry(exc=busy, countdown=countdown, max_retries=None,
                         kwargs=kwargs) from busy
    except TransientError as exc:
        countdown = min(2 ** backend_retries * 2, 60) * random.uniform(0.5, 1.0)
        raise task.retry(exc=exc, countdown=countdown, max_retries=None) from exc


@shared_task(**_per_instance)
def reconcile_instance(self, pk: int, lease_waits: int = 0) -> str:
    """Carry out what instance `pk` owes: converge it, or tear it down when it is deleting."""
    owner = services.lease_owner(self.request.id)

    def converge(last_attempt: bool) -> str:
        with CONVERGE_SECONDS.time():
            return services.instance_converge(pk=pk, owner=owner, last_attempt=last_attempt)

    return _run(self, converge, lease_waits=lease_waits)


@shared_task(**_per_instance)
def teardown_instance(self, name: str, purge_volumes: bool, lease_waits: int = 0) -> str:
    """Remove what is left of an instance with no row (messages sent by older versions)."""
    owner = services.lease_owner(self.request.id)
    return _run(self, lambda last_attempt: services.instance_teardown(
        name=name, purge_volumes=purge_volumes, owner=owner, last_attempt=last_attempt),
        lease_waits=lease_waits)


@shared_task(**_per_instance)
def observe_instance(self, pk: int, lease_waits: int = 0) -> str:
    """Read instance `pk`'s workload state again and write it."""
    owner = services.lease_owner(self.request.id)
    return _run(self, lambda last_attempt: services.instance_observe(
        pk=pk, owner=owner, last_attempt=last_attempt), lease_waits=lease_waits)


@shared_task(bind=True, soft_time_limit=SOFT_LIMIT, time_limit=HARD_LIMIT)
def reconcile_all(self) -> str:
    """Periodic (Celery beat): observe everything in one list call, repair drift, send what is
    owed."""
    try:
        with RECONCILE_ALL_SECONDS.time():
            report = services.instances_reconcile_all(
                owner=services.lease_owner(self.request.id))
    except TransientError as exc:
        # The next beat tries again; retrying here would only pile runs up.
        logger.warning("reconcile_all skipped: %s", exc)
        return f"skipped: {exc}"
    except SoftTimeLimitExceeded:
        # Owed work was sent first (see instances_reconcile_all); the next beat does the rest.
        logger.warning("reconcile_all stopped at its time limit (%s s)", SOFT_LIMIT)
        return "timed out"
    return str(report) if report else "busy"


PULL_LIMIT = settings.CLAWORC_PULL_TIMEOUT


@shared_task(bind=True, autoretry_for=(TransientError,), retry_backoff=5, retry_backoff_max=60,
             retry_jitter=True, max_retries=5, soft_time_limit=PULL_LIMIT,
             time_limit=PULL_LIMIT + 30)
def pull_image(self, image: str) -> str:
    """Pull `image` onto the host, with its own time limit (CLAWORC_PULL_TIMEOUT).

    Not acks_late: a pull outlives the broker's redelivery timeout, and a redelivered copy
    would only find the lease taken. A pull whose worker died is requested again by
    reconcile_all, which finds it in the database (its heartbeat stops).
    """
    from .services import images

    return images.image_pull(
        image=image, owner=services.lease_owner(self.request.id),
        last_attempt=_last_attempt(self))


@shared_task(bind=True, soft_time_limit=SOFT_LIMIT, time_limit=HARD_LIMIT)
def sample_usage(self) -> str:
    """Periodic (Celery beat): CPU, memory and volume sizes within CLAWORC_USAGE_MAX_CALLS."""
    from . import usage

    try:
        return str(usage.usage_sample())
    except TransientError as exc:
        logger.warning("usage sample skipped: %s", exc)
        return f"skipped: {exc}"


@shared_task(bind=True, acks_late=True, autoretry_for=(TransientError,), retry_backoff=2,
             retry_backoff_max=60, retry_jitter=True, max_retries=8, soft_time_limit=SOFT_LIMIT,
             time_limit=HARD_LIMIT)
def rollout_advance(self, rollout_id: int) -> str:
    """Take fleet image update `rollout_id` one step further (it re-enqueues itself)."""
    from .services import rollouts

    return rollouts.rollout_advance(rollout_id=rollout_id)


@shared_task(bind=True, soft_time_limit=SOFT_LIMIT, time_limit=HARD_LIMIT)
def expire_records(self) -> str:
    """Periodic (Celery beat, daily): drop records older than CLAWORC_RETENTION_DAYS."""
    from . import housekeeping

    return str(housekeeping.records_expire())


@shared_task(bind=True, soft_time_limit=SOFT_LIMIT, time_limit=HARD_LIMIT)
def apply_schedules(self) -> str:
    """Periodic (Celery beat, CLAWORC_SCHEDULE_INTERVAL): run hours, then idle stop."""
    from .services import idle, schedules

    report = schedules.schedules_apply(owner=services.lease_owner(self.request.id))
    return f"{report}; {idle.idle_stop()}"
