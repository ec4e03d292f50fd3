"""Worker liveness: heartbeats written by workers, and the read /health and the status pages
make of them together with the owed work (a selector: it writes nothing)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Min
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..models import Instance, WorkerHeartbeat

#: Seconds between two heartbeats of a worker's main process.
HEARTBEAT_SECONDS = 5.0


def worker_heartbeat(*, hostname: str) -> None:
    """The worker's main process is alive (its timer ran)."""
    WorkerHeartbeat.objects.update_or_create(
        hostname=hostname, defaults={"pid": os.getpid(), "seen_at": timezone.now()})


def worker_task_finished(*, hostname: str) -> None:
    """A pool process finished a task: the worker makes progress."""
    now = timezone.now()
    if not WorkerHeartbeat.objects.filter(hostname=hostname).update(last_task_at=now):
        WorkerHeartbeat.objects.create(hostname=hostname, pid=os.getpid(), seen_at=now,
                                       last_task_at=now)


def worker_gone(*, hostname: str) -> None:
    """A worker shut down cleanly: it is no longer expected to beat."""
    WorkerHeartbeat.objects.filter(hostname=hostname).delete()


@dataclass
class Liveness:
    """What /health and the status pages say about the workers and the work they owe."""

    workers: list[dict] = field(default_factory=list)
    owed: int = 0
    oldest_owed_seconds: float | None = None
    last_progress_seconds: float | None = None
    degraded: bool = False
    reason: str = ""

    def as_json(self) -> dict:
        return {"workers": self.workers, "owed_work": {
            "instances": self.owed, "oldest_seconds": self.oldest_owed_seconds},
            "last_progress_seconds": self.last_progress_seconds,
            "degraded": self.degraded, "reason": self.reason}


def _age(then: datetime | None, now: datetime) -> float | None:
    return None if then is None else round(max(0.0, (now - then).total_seconds()), 1)


def liveness() -> Liveness:
    """Two queries: the heartbeats, and the owed work's size and age.

    Degraded when work has been owed for longer than two reconcile intervals and no worker
    finished a task within that time: no worker runs, or the one that runs is wedged.
    """
    now = timezone.now()
    window = timedelta(seconds=2 * settings.CLAWORC_RECONCILE_INTERVAL)
    beats = list(WorkerHeartbeat.objects.all())
    owed = (Instance.objects.owing_work().exclude(status=Instance.Status.PULLING)
            .aggregate(n=Count("pk"), oldest=Min(Coalesce("owed_since", "status_since"))))
    result = Liveness(
        workers=[{"hostname": b.hostname, "seen_seconds_ago": _age(b.seen_at, now),
                  "last_task_seconds_ago": _age(b.last_task_at, now),
                  "alive": now - b.seen_at <= timedelta(seconds=3 * HEARTBEAT_SECONDS)}
                 for b in beats],
        owed=owed["n"], oldest_owed_seconds=_age(owed["oldest"], now),
    )
    progress = max((b.last_task_at for b in beats if b.last_task_at), default=None)
    result.last_progress_seconds = _age(progress, now)
    stuck = owed["oldest"] is not None and now - owed["oldest"] > window
    if stuck and (progress is None or now - progress > window):
        alive = [w for w in result.workers if w["alive"]]
        result.degraded = True
        result.reason = (
            f"{result.owed} instance(s) have waited for a worker for "
            f"{int(result.oldest_owed_seconds)} s and no worker finished a task in "
            f"{int(window.total_seconds())} s: "
            + ("no Celery worker is running (or none can reach the database)." if not alive
               else "the running worker(s) take tasks but finish none (a wedged pool): "
               "restart them."))
    return result

