"""Worker side (beat): idle stop. A running instance that nobody uses is stopped, through the
same intent as the admin's Stop (actor "idle"), with the numbers that made it idle.

Idle means, for at least CLAWORC_IDLE_AFTER seconds:
- every usage sample below CLAWORC_IDLE_CPU_THRESHOLD cores (`InstanceUsage.idle_since`, kept
  by the usage sampler, instances/usage.py); a missing, number-less or stale sample is never
  idle;
- no open desktop session through the dashboard, and none that ended or was last used within
  that time (desktops.DesktopSession). With CLAWORC_DESKTOP_ACCESS=ports nobody's desktop goes
  through the dashboard, so only the CPU is judged (docs/schedules.md).

Instances whose "stop when idle" is cleared are never stopped. CLAWORC_IDLE_AFTER=0 turns
idle stop off.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Exists, F, OuterRef, Value, When
from django.utils import timezone

from ..models import Instance
from .intents import instance_stop

logger = logging.getLogger(__name__)

ACTOR = "idle"
IDLE = "idle-stop"


@dataclass
class IdleReport:
    stopped: list[str] = field(default_factory=list)
    enabled: bool = True

    def __str__(self):
        if not self.enabled:
            return "idle stop: off (CLAWORC_IDLE_AFTER=0)"
        return f"idle stop: stopped {len(self.stopped)}"


def sample_max_age(running: int) -> timedelta:
    """A sample older than this is stale. The sampler reads CLAWORC_USAGE_MAX_CALLS instances a
    run at worst (one call each), so a large fleet is gone round in several runs: three rounds."""
    rounds = max(1, math.ceil(running / max(1, settings.CLAWORC_USAGE_MAX_CALLS)))
    return timedelta(seconds=3 * settings.CLAWORC_USAGE_INTERVAL * rounds)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def idle_message(*, idle_seconds: float, cpu: float, threshold: float, sessions_seen: bool) -> str:
    """"idle for 30 min: CPU 0.01 cores < 0.05, no desktop session"."""
    desktop = ("no desktop session" if sessions_seen else
               "desktop sessions not visible (CLAWORC_DESKTOP_ACCESS=ports)")
    return (f"idle for {_duration(idle_seconds)}: CPU {cpu:.2f} cores < {threshold:g}, "
            f"{desktop}")


def idle_stop(*, now: datetime | None = None) -> IdleReport:
    """Stop every running instance idle for CLAWORC_IDLE_AFTER s. Constant number of queries."""
    from desktops.selectors import open_sessions, with_last_desktop_activity

    after = settings.CLAWORC_IDLE_AFTER
    if after <= 0:
        return IdleReport(enabled=False)
    now = now or timezone.now()
    threshold = settings.CLAWORC_IDLE_CPU_THRESHOLD
    sessions_seen = settings.CLAWORC_DESKTOP_ACCESS != "ports"
    running = Instance.objects.filter(status=Instance.Status.RUNNING).count()
    limit = now - timedelta(seconds=after)
    candidates = with_last_desktop_activity(
        Instance.objects.filter(
            idle_stop=True, status=Instance.Status.RUNNING,
            desired_state=Instance.DesiredState.RUNNING,
            usage__idle_since__lte=limit, usage__cpu_cores__lt=threshold,
            usage__sampled_at__gte=now - sample_max_age(running),
        ).annotate(desktop_open=Exists(open_sessions(now=now).filter(instance=OuterRef("pk"))))
    ).values_list("pk", "name", "usage__cpu_cores", "usage__idle_since", "desktop_open",
                  "last_desktop_activity")
    messages: dict[int, str] = {}
    for pk, _name, cpu, idle_since, desktop_open, last_desktop in candidates:
        if desktop_open:
            continue
        since = max(idle_since, last_desktop) if last_desktop else idle_since
        if since > limit:
            continue  # someone used a desktop within the idle time
        messages[pk] = idle_message(idle_seconds=(now - since).total_seconds(), cpu=cpu,
                                    threshold=threshold, sessions_seen=sessions_seen)
    report = IdleReport()
    if not messages:
        return report
    with transaction.atomic():
        outcome = instance_stop(instance_ids=list(messages), actor=ACTOR,
                                messages={pk: f"Stopped when idle: {m}." for pk, m in
                                          messages.items()})
        report.stopped = list(outcome.queued)
        done = Instance.objects.filter(pk__in=list(messages), name__in=outcome.queued)
        done.update(
            auto_kind=Value(IDLE),
            auto_note=Case(*(When(pk=pk, then=Value(f"Stopped when idle at "
                                                    f"{now:%Y-%m-%d %H:%M} UTC: {m}."))
                             for pk, m in messages.items()), default=F("auto_note"),
                           output_field=Instance._meta.get_field("auto_note")),
            auto_version=F("version"))
    logger.info("%s: %s", report, ", ".join(report.stopped))
    return report
