"""Celery tasks: thin wrappers that take ids and plain strings and call a service.

Every task is idempotent (the orchestrator's operations are), so `acks_late` is safe: a task
whose worker died is delivered again and finishes the job. Transient orchestrator errors, and a
lease held by another worker, are retried with exponential backoff and jitter.
"""

from __future__ import annotations

import logging
import random

from celery import shared_task
from django.conf import settings

from orchestrators.base import TransientError

from . import services
from .metrics import CONVERGE_SECONDS, RECONCILE_ALL_SECONDS

logger = logging.getLogger(__name__)

HARD_LIMIT = settings.CLAWORC_TASK_TIME_LIMIT
# The soft limit raises inside the task, which then records why it stopped and frees its lease.
SOFT_LIMIT = max(HARD_LIMIT - 10, int(HARD_LIMIT * 0.8))

_per_instance = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (TransientError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
    "soft_time_limit": SOFT_LIMIT,
    "time_limit": HARD_LIMIT,
}


#: Waiting for another worker's lease does not use up the retries meant for backend errors.
LEASE_WAIT_RETRIES = 60


def _last_attempt(task) -> bool:
    return task.request.retries >= task.max_retries


def _wait_for_lease(task, busy: services.LeaseBusy):
    # Retry about when the holder's lease ends (it usually ends much sooner, on release).
    countdown = min(busy.retry_in, 30.0) * random.uniform(0.2, 1.0)
    logger.info("%s; retrying in %.1f s", busy, countdown)
    raise task.retry(exc=busy, countdown=countdown, max_retries=LEASE_WAIT_RETRIES)


@shared_task(**_per_instance)
def reconcile_instance(self, pk: int) -> str:
    """Converge instance `pk` to its desired state."""
    try:
        with CONVERGE_SECONDS.time():
            return services.instance_converge(
                pk=pk, owner=services.lease_owner(self.request.id),
                last_attempt=_last_attempt(self),
            )
    except services.LeaseBusy as busy:
        _wait_for_lease(self, busy)


@shared_task(**_per_instance)
def teardown_instance(self, name: str, purge_volumes: bool) -> str:
    """Remove what is left of a deleted instance (its row is gone: hence the name, not an id)."""
    try:
        return services.instance_teardown(
            name=name, purge_volumes=purge_volumes, owner=services.lease_owner(self.request.id),
            last_attempt=_last_attempt(self),
        )
    except services.LeaseBusy as busy:
        _wait_for_lease(self, busy)


@shared_task(bind=True, acks_late=True, soft_time_limit=SOFT_LIMIT, time_limit=HARD_LIMIT)
def observe_instance(self, pk: int) -> str:
    """Read instance `pk`'s workload state again and write it."""
    return services.instance_observe(pk=pk, owner=services.lease_owner(self.request.id))


@shared_task(bind=True, soft_time_limit=SOFT_LIMIT, time_limit=HARD_LIMIT)
def reconcile_all(self) -> str:
    """Periodic (Celery beat): observe everything in one list call, repair drift."""
    try:
        with RECONCILE_ALL_SECONDS.time():
            report = services.instances_reconcile_all(
                owner=services.lease_owner(self.request.id))
    except TransientError as exc:
        # The next beat tries again; retrying here would only pile runs up.
        logger.warning("reconcile_all skipped: %s", exc)
        return f"skipped: {exc}"
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
