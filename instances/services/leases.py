"""Worker side: the per-instance lease (one worker acts on a name at a time)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, F, Q
from django.db.models.functions import Now

from orchestrators.base import TransientError

from ..models import InstanceLease

logger = logging.getLogger(__name__)

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


def _db_now_plus(ttl: timedelta) -> ExpressionWrapper:
    return ExpressionWrapper(Now() + ttl, output_field=DateTimeField())


def lease_acquire(*, name: str, owner: str, ttl: timedelta | None = None) -> bool:
    """Take the lease on `name` unless someone else holds an unexpired one. Autocommit only.

    Both the expiry and the comparison use the database's clock: workers on machines whose
    clocks disagree still exclude each other.
    """
    expires = _db_now_plus(ttl or lease_ttl())
    taken = InstanceLease.objects.filter(
        Q(expires_at__lt=Now()) | Q(owner=owner), name=name
    ).update(owner=owner, expires_at=expires)
    if taken:
        return True
    try:
        with transaction.atomic():
            InstanceLease.objects.create(name=name, owner=owner, expires_at=expires)
    except IntegrityError:
        return False
    return True


def leases_held() -> set[str]:
    """Names whose lease is held now (by the database's clock)."""
    return set(InstanceLease.objects.filter(expires_at__gt=Now()).values_list("name", flat=True))


def lease_release(*, name: str, owner: str) -> None:
    InstanceLease.objects.filter(name=name, owner=owner).delete()


@contextlib.contextmanager
def instance_lease(*, name: str, owner: str) -> Iterator[None]:
    if not lease_acquire(name=name, owner=owner):
        left = InstanceLease.objects.filter(name=name).annotate(
            left=ExpressionWrapper(F("expires_at") - Now(), output_field=DurationField())
        ).values_list("left", flat=True).first()
        wait = left.total_seconds() if left else 0.0
        raise LeaseBusy(f"{name} is being changed by another worker; will try again",
                        retry_in=max(1.0, wait))
    try:
        yield
    finally:
        lease_release(name=name, owner=owner)
