"""State changes that keep the records tidy: orphans removed on request, old records expired.

Orphans (managed workloads or volumes with no instance) are found by reconcile_all; removing
one's row alone would bring it back at the next check, so removing an orphan removes its
workload, config and volumes (the teardown an instance's deletion runs), after which its row
goes too. The Activity log and orphan records are kept CLAWORC_RETENTION_DAYS days.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import services
from .models import Activity, Instance, OrphanWorkload

logger = logging.getLogger(__name__)


def orphans_remove(*, orphan_ids: list[int], actor: str) -> services.Queued:
    """Queue the removal of the selected orphans' workloads, config and volumes.

    A name that belongs to an instance again (created since) is skipped: its workload is the
    instance's now.
    """
    outcome = services.Queued(verb="removal")
    with transaction.atomic(), services.acting_as(actor):
        names = list(OrphanWorkload.objects.filter(pk__in=orphan_ids)
                     .order_by("name").values_list("name", flat=True))
        taken = set(Instance.objects.filter(name__in=names).values_list("name", flat=True))
        for name in names:
            if name in taken:
                outcome.skipped.append((name, "an instance has this name now"))
                continue
            services.instance_teardown_enqueue(name=name, purge_volumes=True)
            outcome.queued.append(name)
    logger.info("orphan removal queued by %s for %s", actor, ", ".join(outcome.queued) or "-")
    return outcome


@dataclass
class Purged:
    activities: int = 0
    orphans: int = 0

    def __str__(self) -> str:
        return f"{self.activities} activities and {self.orphans} orphan records older than " \
               f"{settings.CLAWORC_RETENTION_DAYS} days deleted"


def retention_cutoff(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(days=settings.CLAWORC_RETENTION_DAYS)


def records_expire(*, now: datetime | None = None) -> Purged:
    """Delete Activity records and orphan records (not seen since) older than the window."""
    cutoff = retention_cutoff(now)
    activities, _ = Activity.objects.filter(created_at__lt=cutoff).delete()
    orphans, _ = OrphanWorkload.objects.filter(last_seen__lt=cutoff).delete()
    purged = Purged(activities, orphans)
    if activities or orphans:
        logger.info("housekeeping: %s", purged)
    return purged
