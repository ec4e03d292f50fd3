"""Run hours: when an instance's schedule opens and closes its window, as plain functions.

A schedule is days of the week, a start and an end time of day and an IANA time zone. Each
chosen day opens one window at its start time, in that zone; the window closes at the end time
on the same day, or on the next day when the end is not after the start (22:00-06:00). The
beat (services/schedules.py) asks `latest_transition()` which edge was the last to pass and
applies each edge once.

Local times are turned into instants with zoneinfo, one instant per day and edge, so a day
whose clocks change neither doubles nor drops an edge: a time that occurs twice (clocks go
back) is taken at its first occurrence, a time that does not exist (clocks go forward) at the
same wall-clock distance past the jump (02:30 becomes 03:30).
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

from django.core.exceptions import ValidationError

#: Stored names of the days, Monday first (datetime.weekday() order).
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_LABELS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

START, STOP = "start", "stop"


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_days(value: str) -> tuple[int, ...]:
    """"mon,tue,fri" -> (0, 1, 4). Raises ValidationError naming what is wrong."""
    found = []
    for part in (value or "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        if part not in DAYS:
            raise ValidationError(
                f"{part!r} is not a day; use {', '.join(DAYS)} separated by commas.",
                code="bad_day")
        found.append(DAYS.index(part))
    return tuple(sorted(set(found)))


def format_days(days) -> str:
    """(0, 1, 4) or ["mon", "fri"] -> "mon,tue,fri" (the stored form, Monday first)."""
    indexes = {d if isinstance(d, int) else DAYS.index(d) for d in days}
    return ",".join(DAYS[i] for i in sorted(indexes))


def validate_days(value: str) -> None:
    parse_days(value)


def validate_timezone(value: str) -> None:
    if value and value not in _zones():
        raise ValidationError(
            f"{value!r} is not an IANA time zone; use a name such as Europe/Paris, "
            "America/New_York or UTC.", code="bad_zone")


def _days_text(days: tuple[int, ...]) -> str:
    if days == (0, 1, 2, 3, 4):
        return "Mon-Fri"
    if len(days) == 7:
        return "every day"
    if days == (5, 6):
        return "Sat-Sun"
    return ",".join(DAY_LABELS[d] for d in days)


@dataclass(frozen=True)
class Schedule:
    days: tuple[int, ...]
    start: time
    end: time
    zone: str

    @property
    def key(self) -> str:
        """What the schedule is, as text: a changed schedule has a different key."""
        return f"{format_days(self.days)} {self.start:%H:%M}-{self.end:%H:%M} {self.zone}"

    def __str__(self) -> str:
        overnight = " (next day)" if self.end <= self.start else ""
        return (f"{_days_text(self.days)} {self.start:%H:%M}-{self.end:%H:%M}{overnight} "
                f"{self.zone}")

    def edges_on(self, day: date) -> list[tuple[datetime, str]]:
        """The edges of the window opened on `day` (none when `day` is not a chosen day)."""
        if day.weekday() not in self.days:
            return []
        zone = zoneinfo.ZoneInfo(self.zone)
        end_day = day if self.end > self.start else day + timedelta(days=1)
        return [(_instant(day, self.start, zone), START),
                (_instant(end_day, self.end, zone), STOP)]


def _instant(day: date, at: time, zone: zoneinfo.ZoneInfo) -> datetime:
    # fold=0: the first of a repeated time; a skipped time keeps the offset from before the
    # jump, which lands the same distance after it. Either way one instant per day and edge.
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def schedule_errors(*, days: str, start: time | None, end: time | None,
                    zone: str) -> dict[str, str]:
    """What is wrong with these four fields together, by field ({} when they are fine).

    All empty: no schedule. Otherwise all four are needed, and the window cannot be empty.
    """
    given = {"schedule_days": bool((days or "").strip()), "schedule_start": start is not None,
             "schedule_end": end is not None, "schedule_timezone": bool(zone)}
    if not any(given.values()):
        return {}
    errors = {}
    labels = {"schedule_days": "the days", "schedule_start": "a start time",
              "schedule_end": "an end time", "schedule_timezone": "a time zone"}
    for field, present in given.items():
        if not present:
            errors[field] = (f"A schedule needs {labels[field]}; leave all four schedule fields "
                             "empty for none.")
    try:
        if given["schedule_days"] and not parse_days(days):
            errors["schedule_days"] = "Choose at least one day."
    except ValidationError as exc:
        errors["schedule_days"] = exc.messages[0]
    try:
        validate_timezone(zone)
    except ValidationError as exc:
        errors["schedule_timezone"] = exc.messages[0]
    if start is not None and end is not None and start == end:
        errors["schedule_end"] = (f"The window {start:%H:%M}-{end:%H:%M} is empty: the end must "
                                  "differ from the start (an end before the start runs "
                                  "overnight).")
    return errors


def schedule_of(*, days: str, start: time | None, end: time | None,
                zone: str) -> Schedule | None:
    """The Schedule these fields describe, None when there is none (or it is invalid)."""
    if schedule_errors(days=days, start=start, end=end, zone=zone) or start is None:
        return None
    return Schedule(days=parse_days(days), start=start.replace(second=0, microsecond=0),
                    end=end.replace(second=0, microsecond=0), zone=zone)


def latest_transition(schedule: Schedule, now: datetime) -> tuple[datetime, str] | None:
    """The last edge (instant, START or STOP) at or before `now`; None when none in 8 days."""
    local_today = now.astimezone(zoneinfo.ZoneInfo(schedule.zone)).date()
    best = None
    # A window opened yesterday may close today; eight days back covers a weekly schedule.
    for back in range(8, -1, -1):
        for instant, kind in schedule.edges_on(local_today - timedelta(days=back)):
            if instant <= now and (best is None or instant > best[0]):
                best = (instant, kind)
    return best


def next_transition(schedule: Schedule, now: datetime) -> tuple[datetime, str] | None:
    """The first edge after `now` (for the pages: "starts Mon 08:00")."""
    local_today = now.astimezone(zoneinfo.ZoneInfo(schedule.zone)).date()
    best = None
    for ahead in range(-1, 8):
        for instant, kind in schedule.edges_on(local_today + timedelta(days=ahead)):
            if instant > now and (best is None or instant < best[0]):
                best = (instant, kind)
    return best


def local_text(instant: datetime, zone: str) -> str:
    """"Mon 08:00" in the schedule's zone."""
    local = instant.astimezone(zoneinfo.ZoneInfo(zone))
    return f"{DAY_LABELS[local.weekday()]} {local:%H:%M}"


def schedule_summary(instance, now: datetime | None = None) -> str:
    """"Mon-Fri 08:00-20:00 Europe/Paris; next: stop at Mon 20:00." ("" without a schedule)."""
    schedule = instance.schedule
    if schedule is None:
        return ""
    upcoming = next_transition(schedule, now or datetime.now(UTC))
    if upcoming is None:
        return str(schedule)
    instant, kind = upcoming
    return f"{schedule}; next: {kind} at {local_text(instant, schedule.zone)}."
