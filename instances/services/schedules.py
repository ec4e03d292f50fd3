"""Worker side (beat): run hours. At a window's start the schedule starts the instance, at its
end it stops it, through the same intents as the admin's Start and Stop (actor "schedule").

Edge-triggered, like a thermostat with a manual override: each edge is applied once, and a
person who stops a bot inside its window (or starts it outside) is not overridden until the
next edge. The row remembers the last edge applied (`schedule_applied_at`, for the schedule
`schedule_applied_key`), so a beat that runs late or twice applies an edge exactly once, and a
beat missed for a long time applies only the latest edge, never the ones in between. A new or
changed schedule acts from its next edge.

A scheduled start that the intent refuses (admission control: the host is full) is recorded
like a manual refusal, once: the row keeps `auto_kind = "refused"` and the start is tried again
on each beat while its window is open and nobody has acted on the row, recorded again only when
the reason changes. See docs/schedules.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from ..models import Activity, Instance
from ..run_hours import START, Schedule, latest_transition, local_text
from .intents import instance_start, instance_stop
from .leases import lease_acquire, lease_release

logger = logging.getLogger(__name__)

ACTOR = "schedule"
LEASE = "*schedules*"  # not a DNS label, so never an instance name
REFUSED, STARTED, STOPPED = "refused", "schedule-start", "schedule-stop"
#: What the start intent says when there is simply nothing to do (not a refusal).
NOT_REFUSALS = frozenset({"already running", "being deleted"})


@dataclass
class ScheduleReport:
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    baselined: list[str] = field(default_factory=list)

    def __str__(self):
        return (f"schedule: started {len(self.started)}, stopped {len(self.stopped)}, "
                f"refused {len(self.refused)}, new schedules {len(self.baselined)}")


def _edge_text(schedule: Schedule, instant: datetime, kind: str) -> str:
    verb = "opened" if kind == START else "closed"
    return f"window {schedule} {verb} at {local_text(instant, schedule.zone)}"


def _per_row(column: str, values: dict[int, object]) -> Case:
    """CASE pk WHEN ... THEN ...: one UPDATE writes each row its own value (others keep theirs)."""
    output = Instance._meta.get_field(column)
    return Case(*(When(pk=pk, then=Value(v, output_field=output)) for pk, v in values.items()),
                default=F(column), output_field=output)


def schedules_apply(*, now: datetime | None = None, owner: str = "schedules") -> ScheduleReport:
    """Apply each scheduled instance's latest edge if it was not applied yet; retry refused
    starts whose window is still open. A constant number of queries, whatever the fleet."""
    now = now or timezone.now()
    report = ScheduleReport()
    # Two beats at once would both see an edge as not applied yet: one runner at a time.
    if not lease_acquire(name=LEASE, owner=owner, ttl=timedelta(minutes=5)):
        logger.info("schedules: another run is in progress")
        return report
    try:
        _apply(now=now, report=report)
    finally:
        lease_release(name=LEASE, owner=owner)
    if report.started or report.stopped or report.refused:
        logger.info("%s", report)
    return report


def _apply(*, now: datetime, report: ScheduleReport) -> None:
    rows = list(
        Instance.objects.exclude(schedule_days="").exclude(status=Instance.Status.DELETING)
        .only("pk", "name", "version", "schedule_days", "schedule_start", "schedule_end",
              "schedule_timezone", "schedule_applied_at", "schedule_applied_key",
              "auto_kind", "auto_note", "auto_version")
    )
    applied: dict[int, tuple[datetime, str]] = {}
    starts: dict[int, str] = {}  # pk -> Activity message
    stops: dict[int, str] = {}
    edge_of: dict[int, tuple[Schedule, datetime, str]] = {}
    for row in rows:
        schedule = row.schedule
        if schedule is None:
            continue
        last = latest_transition(schedule, now)
        if last is None:
            continue
        instant, kind = last
        if row.schedule_applied_key != schedule.key or row.schedule_applied_at is None:
            # New or changed: act from the next edge (setting a schedule is itself a person's
            # decision about the present).
            applied[row.pk] = (instant, schedule.key)
            report.baselined.append(row.name)
            continue
        text = _edge_text(schedule, instant, kind)
        if instant > row.schedule_applied_at:
            applied[row.pk] = (instant, schedule.key)
            edge_of[row.pk] = (schedule, instant, kind)
            if kind == START:
                starts[row.pk] = f"Scheduled start: {text}."
            else:
                stops[row.pk] = f"Scheduled stop: {text}."
        elif (kind == START and instant == row.schedule_applied_at
              and row.auto_kind == REFUSED and row.auto_version == row.version):
            # Refused earlier in this window and nobody acted since: try again.
            edge_of[row.pk] = (schedule, instant, kind)
            starts[row.pk] = f"Scheduled start (tried again): {text}."
    if not applied and not starts:
        return
    names = {row.pk: row.name for row in rows}
    previous_note = {row.pk: row.auto_note for row in rows}
    previous_kind = {row.pk: row.auto_kind for row in rows}
    notes: dict[int, tuple[str, str]] = {}  # pk -> (auto_kind, auto_note)
    refusals: list[Activity] = []
    with transaction.atomic():
        # One transaction: the intents, their Activity and the edges marked applied commit
        # together (a beat killed half-way applies the edge again, not twice).
        if stops:
            outcome = instance_stop(instance_ids=list(stops), actor=ACTOR, messages=stops)
            for name in outcome.queued:
                report.stopped.append(name)
            for pk in stops:
                if names[pk] in outcome.queued:
                    schedule, instant, _ = edge_of[pk]
                    notes[pk] = (STOPPED, f"Stopped by the schedule at "
                                 f"{local_text(instant, schedule.zone)} ({schedule}).")
                elif previous_kind[pk] == REFUSED:
                    notes[pk] = ("", "")  # its window closed: the refusal is history
        if starts:
            outcome = instance_start(instance_ids=list(starts), actor=ACTOR, messages=starts)
            skipped = dict(outcome.skipped)
            for pk in starts:
                name = names[pk]
                schedule, instant, _ = edge_of[pk]
                if name in outcome.queued:
                    report.started.append(name)
                    notes[pk] = (STARTED, f"Started by the schedule at "
                                 f"{local_text(instant, schedule.zone)} ({schedule}).")
                    continue
                reason = skipped.get(name, "")
                if not reason or reason in NOT_REFUSALS:
                    continue
                note = (f"Scheduled start at {local_text(instant, schedule.zone)} refused: "
                        f"{reason}")
                report.refused.append((name, reason))
                if previous_note[pk] == note and pk not in applied:
                    continue  # the same refusal as last beat: recorded once per window
                notes[pk] = (REFUSED, note)
                refusals.append(Activity(
                    instance_id=pk, instance_name=name, action="start", actor=ACTOR,
                    result=Activity.Result.ERROR,
                    message=f"Scheduled start refused ({_edge_text(schedule, instant, START)}): "
                            f"{reason}"))
        if refusals:
            Activity.objects.bulk_create(refusals)
        updates = {}
        if applied:
            updates["schedule_applied_at"] = _per_row(
                "schedule_applied_at", {pk: at for pk, (at, _) in applied.items()})
            updates["schedule_applied_key"] = _per_row(
                "schedule_applied_key", {pk: key for pk, (_, key) in applied.items()})
        if notes:
            updates["auto_kind"] = _per_row("auto_kind", {pk: k for pk, (k, _) in notes.items()})
            updates["auto_note"] = _per_row("auto_note", {pk: n for pk, (_, n) in notes.items()})
            # The version the intent just wrote: the note is shown until a person acts.
            updates["auto_version"] = Case(
                *(When(pk=pk, then=F("version")) for pk in notes), default=F("auto_version"))
        if updates:
            Instance.objects.filter(pk__in=[*applied, *notes]).update(**updates)
