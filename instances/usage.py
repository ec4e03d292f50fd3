"""Resource usage: sampled by the worker on a schedule (tasks.sample_usage), read by the pages.

Each run makes a bounded number of daemon or API calls, CLAWORC_USAGE_MAX_CALLS at most: the
running instances sampled longest ago go first, so with more instances than the budget every one
is still sampled in turn. Volume sizes cost one more call and are read at most every
CLAWORC_USAGE_VOLUME_INTERVAL seconds.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import F, Max
from django.utils import timezone

from orchestrators.base import Orchestrator, Usage

from .models import Instance, InstanceUsage

logger = logging.getLogger(__name__)

_SAMPLE_FIELDS = ["sampled_at", "cpu_cores", "cpu_seconds_total", "memory_bytes",
                  "memory_limit_bytes", "message", "idle_since"]
_VOLUME_FIELDS = ["volume_bytes", "volumes", "volumes_sampled_at"]


@dataclass
class UsageReport:
    sampled: int = 0
    running: int = 0
    volumes: bool = False
    calls_budget: int = 0

    def __str__(self):
        return (f"sampled {self.sampled} of {self.running} running instances"
                f"{', volume sizes' if self.volumes else ''} (budget {self.calls_budget} calls)")


def _volumes_due(now: datetime) -> bool:
    last = InstanceUsage.objects.aggregate(last=Max("volumes_sampled_at"))["last"]
    return last is None or (now - last).total_seconds() >= settings.CLAWORC_USAGE_VOLUME_INTERVAL


def names_within_budget(orch: Orchestrator, budget: int, *, volume_calls: int = 0) -> int | None:
    """How many names one usage() call may take within `budget` calls, `volume_calls` of them
    spent already on volume sizes; None: any number."""
    left = budget - orch.usage_fixed_calls - volume_calls
    if orch.usage_calls_per_name == 0:
        return None if left >= 0 else 0
    return max(0, left // orch.usage_calls_per_name)


def _cores(previous: InstanceUsage | None, usage: Usage, now: datetime) -> float | None:
    if usage.cpu_cores is not None:
        return usage.cpu_cores
    if (usage.cpu_seconds_total is None or previous is None
            or previous.cpu_seconds_total is None or previous.sampled_at is None):
        return None
    elapsed = (now - previous.sampled_at).total_seconds()
    used = usage.cpu_seconds_total - previous.cpu_seconds_total
    if elapsed <= 0 or used < 0:  # a restarted container starts its counter again
        return None
    return round(used / elapsed, 4)


def _idle_since(previous: InstanceUsage | None, cores: float | None) -> datetime | None:
    """Since when the instance has been below the idle threshold, with this sample's `cores`.

    A rate covers the time since the previous sample, so a first low one dates from it. No
    number (a first sample, a restarted counter, a backend that cannot say) is never idle.
    """
    if cores is None or cores >= settings.CLAWORC_IDLE_CPU_THRESHOLD:
        return None
    if previous is None:
        return None
    return previous.idle_since or previous.sampled_at


def usage_sample(*, orch: Orchestrator | None = None, now: datetime | None = None) -> UsageReport:
    """Sample CPU and memory of running instances (and volume sizes when due); write them.

    TransientError from the backend propagates: nothing is written, the next run tries again.
    """
    from orchestrators.registry import get_orchestrator

    orch = orch or get_orchestrator()
    now = now or timezone.now()
    budget = settings.CLAWORC_USAGE_MAX_CALLS
    # Volume sizes may use what usage() does not need whatever the number of names.
    volume_budget = budget - orch.usage_fixed_calls
    volumes = orch.volume_report(volume_budget) if _volumes_due(now) else None
    count = names_within_budget(orch, budget, volume_calls=volumes.calls if volumes else 0)
    running = (Instance.objects.filter(status=Instance.Status.RUNNING)
               .order_by(F("usage__sampled_at").asc(nulls_first=True), "pk")
               .values_list("pk", "name"))
    running = list(running)
    chosen = running if count is None else running[:count]
    previous = InstanceUsage.objects.in_bulk([pk for pk, _ in chosen])
    found = orch.usage([name for _, name in chosen]) if chosen else {}

    rows = []
    for pk, name in chosen:
        usage = found.get(name)
        if usage is None:
            continue  # not running after all: the next reconcile says so
        cores = _cores(previous.get(pk), usage, now)
        rows.append(InstanceUsage(
            instance_id=pk, sampled_at=now, cpu_cores=cores,
            idle_since=_idle_since(previous.get(pk), cores),
            cpu_seconds_total=usage.cpu_seconds_total, memory_bytes=usage.memory_bytes,
            memory_limit_bytes=usage.memory_limit_bytes,
            message="" if usage.available else usage.message[:300],
        ))
    fields = list(_SAMPLE_FIELDS)
    if volumes is not None:
        by_name = {name: pk for pk, name in
                   Instance.objects.values_list("pk", "name")}
        sampled = {row.instance_id: row for row in rows}
        for name, sizes in volumes.sizes.items():
            pk = by_name.get(name)
            if pk is None:
                continue
            row = sampled.get(pk)
            if row is None:
                row = previous.get(pk) or InstanceUsage(instance_id=pk)
                rows.append(row)
                sampled[pk] = row
            row.volumes = {volume: dataclasses.asdict(size) for volume, size in sizes.items()}
            known = [size.used for size in sizes.values() if size.used is not None]
            # A total of some volumes only would read as the whole: none unless all are known.
            row.volume_bytes = sum(known) if len(known) == len(sizes) else None
            row.volumes_sampled_at = now
        fields += _VOLUME_FIELDS
    if rows:
        InstanceUsage.objects.bulk_create(rows, update_conflicts=True,
                                          unique_fields=["instance"], update_fields=fields)
    # A stopped instance uses nothing: no stale numbers on its page or in /metrics.
    # Nor is it idle: idle time counts again from its next start.
    InstanceUsage.objects.exclude(instance__status=Instance.Status.RUNNING).exclude(
        cpu_cores=None, memory_bytes=None, cpu_seconds_total=None, idle_since=None,
    ).update(cpu_cores=None, memory_bytes=None, cpu_seconds_total=None, idle_since=None)
    report = UsageReport(sampled=len(found), running=len(running),
                         volumes=volumes is not None, calls_budget=budget)
    logger.info("usage on %s: %s", orch.backend_name, report)
    return report


# --- for the pages ---------------------------------------------------------------------------

def format_bytes(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def format_cpu(cores: float | None) -> str:
    """"12.5%" where 100% is one full core (as `docker stats` counts)."""
    return "" if cores is None else f"{cores * 100:.1f}%"


def _volume_entries(usage: InstanceUsage | None) -> dict[str, dict]:
    # Samples taken before sizes had parts hold bare numbers: bytes in use.
    return {name: entry if isinstance(entry, dict) else {"used": entry}
            for name, entry in ((usage.volumes if usage else None) or {}).items()}


def volumes_text(usage: InstanceUsage | None) -> str:
    """The instance's volumes together: "12.0 MiB" (in use, as Docker tells it), or with a
    size, as a PVC has: "1.2 GiB used of 20.0 GiB", "20.0 GiB, used: not available"."""
    if usage is None:
        return ""
    sizes = [entry.get("capacity") or entry.get("requested")
             for entry in _volume_entries(usage).values()]
    used = format_bytes(usage.volume_bytes)
    if not sizes or None in sizes:
        return used
    size = format_bytes(sum(sizes))
    return f"{used} used of {size}" if used else f"{size}, used: not available"


def volume_text(usage: InstanceUsage | None, volume: str) -> str:
    """One volume, as its row on the instance page says it: "1.2 GiB used", or
    "capacity 5.0 GiB (5.0 GiB requested) · used: not available (why)"."""
    entry = _volume_entries(usage).get(volume)
    if entry is None:
        return ""
    parts = []
    if entry.get("capacity") is not None:
        parts.append(f"capacity {format_bytes(entry['capacity'])}")
        if entry.get("requested") not in (None, entry["capacity"]):
            parts[-1] += f" ({format_bytes(entry['requested'])} requested)"
    elif entry.get("requested") is not None:
        parts.append(f"{format_bytes(entry['requested'])} requested, not provisioned yet")
    if entry.get("used") is not None:
        parts.append(f"{format_bytes(entry['used'])} used")
    elif entry.get("note"):
        parts.append(entry["note"])
    return " · ".join(parts)


def usage_display(usage: InstanceUsage | None) -> dict[str, str]:
    """What a page shows of a sample: cpu, memory, volumes, message (all strings)."""
    if usage is None:
        return {"cpu": "", "memory": "", "volumes": "", "message": "", "sampled_at": ""}
    memory = format_bytes(usage.memory_bytes)
    if memory and usage.memory_limit_bytes:
        memory += f" / {format_bytes(usage.memory_limit_bytes)}"
    return {
        "cpu": format_cpu(usage.cpu_cores),
        "memory": memory,
        "volumes": volumes_text(usage),
        "message": usage.message,
        "sampled_at": usage.sampled_at.isoformat() if usage.sampled_at else "",
    }


def usage_text(instance) -> str:
    """"12.5% · 300.0 MiB" for a running instance's last sample (what live.js shows too)."""
    try:
        sample = instance.usage
    except InstanceUsage.DoesNotExist:
        return ""
    if instance.status != Instance.Status.RUNNING:
        return ""
    parts = [p for p in (format_cpu(sample.cpu_cores), format_bytes(sample.memory_bytes)) if p]
    return " · ".join(parts) or sample.message
