"""Worker side: the periodic sweep (Celery beat) that observes everything with one list call,
writes statuses in bulk, repairs drift and reports orphans."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from orchestrators.base import (
    STOP_EXIT_CODES,  # noqa: F401  re-exported by the package
    FinalError,
    Orchestrator,
    TransientError,
    is_crash,
)
from orchestrators.base import Status as ObservedStatus

from ..models import SWEPT_SETTING, Activity, Instance, OrphanWorkload, Setting, sweep_format
from .audit import SYSTEM
from .converge import _observed_fields, troubleshooting_message
from .intents import _enqueue
from .leases import RECONCILE_ALL_LEASE, lease_acquire, lease_release, lease_ttl, leases_held

logger = logging.getLogger(__name__)

# --- Worker side: reconcile every instance (Celery beat) ----------------------------------------

# STOP_EXIT_CODES (orchestrators.base): a container stopped by a signal (SIGTERM via `docker
# stop`, SIGKILL) was stopped from outside Claworc, to be undone. Any other non-zero code is a
# crash, shown as `error`.
LOG_TAIL_LINES = 20
#: Log requests in flight at once when many instances crashed together.
CRASH_LOG_READERS = 8


VOLUMES_ONLY = "volumes only"
#: Volumes are listed at every this many beats, and at each beat for a while after a delete:
#: deletes are what leaves volumes without their instance (besides people, whom the periodic
#: list catches). A list at every beat cost as much as the container list itself.
VOLUMES_EVERY = 10
#: The host's CPUs and memory, or the namespace's quota, are read again once the last read is
#: CAPACITY_EVERY intervals old: they rarely change, and a `docker info` at every beat cost
#: about 25 ms at 1,000 instances (docs/capacity.md).
CAPACITY_EVERY = 10
_VOLUMES_LISTED_AT = "reconcile_all.volumes_listed_at:"  # + backend; a Setting


@dataclass
class ReconcileAllReport:
    observed: int = 0
    status_changes: int = 0
    repairs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    #: Instances owing work that were handed to a worker by this run.
    enqueued: list[str] = field(default_factory=list)

    def __str__(self):
        return (f"{self.observed} observed, {self.status_changes} status changes, "
                f"{len(self.repairs)} repairs, {len(self.errors)} new errors, "
                f"{len(self.orphans)} orphans, {len(self.enqueued)} enqueued")


def _age(row: dict, now: datetime) -> float:
    return (now - row["since"]).total_seconds()


def instances_reconcile_all(*, owner: str) -> ReconcileAllReport | None:
    """Observe every instance with ONE list call, write statuses in bulk and repair drift.

    None when another reconcile_all holds the lease. TransientError propagates (the backend is
    unreachable: nothing is written, the next beat tries again).
    """
    from orchestrators.registry import capacity_read_due, get_orchestrator, record_capacity

    if not lease_acquire(name=RECONCILE_ALL_LEASE, owner=owner):
        logger.info("reconcile_all already running elsewhere; skipped")
        return None
    try:
        orch = get_orchestrator()
        report = _reconcile_all_locked(orch)
        # The capacity budget follows the host or quota (resized, quota changed) within
        # CAPACITY_EVERY intervals; a read that fails keeps the last numbers and is tried
        # again at the next beat.
        every = CAPACITY_EVERY * settings.CLAWORC_RECONCILE_INTERVAL
        if capacity_read_due(orch.backend_name, every):
            record_capacity(orch)
        return report
    finally:
        lease_release(name=RECONCILE_ALL_LEASE, owner=owner)


def enqueue_grace() -> timedelta:
    """How long a converge handed to the broker may wait to start before it is sent again."""
    return timedelta(seconds=2 * settings.CLAWORC_RECONCILE_INTERVAL)


def _pending_intent(row: dict) -> bool:
    """An intent not yet carried out: its converge (or teardown) writes the status, not us."""
    return (row["generation"] > row["observed_generation"]
            or row["restart_requested"] > row["restart_done"]
            or row["recreate_requested"] > row["recreate_done"]
            or row["status"] == Instance.Status.DELETING)


def _reconcile_all_locked(orch: Orchestrator) -> ReconcileAllReport:
    started = timezone.now()
    rows = list(Instance.objects.annotate(
        # Only a transitional status times out (_timed_out): reading and converting two
        # datetimes of every row at every beat was a tenth of the sweep at 1,000 rows.
        since=Case(When(status__in=Instance.TRANSITIONAL,
                        then=Coalesce("status_since", "created_at"))),
    ).values(
        "pk", "name", "desired_state", "status", "status_message", "since",
        "generation", "observed_generation", "restart_requested", "restart_done",
        "recreate_requested", "recreate_done", "converge_failed", "image", "clawdbot_config",
    ))
    observed = orch.status_all()
    now = timezone.now()
    busy = leases_held()
    report = ReconcileAllReport(observed=len(observed))
    timeout = settings.CLAWORC_CREATING_TIMEOUT
    updates: dict[int, tuple[str, str]] = {}
    activities: list[Activity] = []
    # Instances waiting for a pull are carried on by the pull (or by _pulling_check).
    to_enqueue: list[int] = []
    waiting = _pulls_waited_for(rows)
    to_pull: set[str] = set()

    tails = _crash_log_tails(orch, rows, observed, busy)

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
        if (row["status"] == Instance.Status.PULLING
                and row["desired_state"] == Instance.DesiredState.RUNNING):
            _pulling_check(row, waiting, now, to_enqueue, to_pull, note)
        elif _pending_intent(row):
            new = _timed_out(orch, row, obs, now, timeout, report, note)
        elif row["desired_state"] == Instance.DesiredState.RUNNING:
            new = _running_wanted(orch, row, obs, now, timeout, report, note, tails)
        elif obs is not None and obs.status in (ObservedStatus.RUNNING, ObservedStatus.CREATING):
            new = (str(obs.status), "Started outside Claworc; stopping it.")
            note(row, "drift", Activity.Result.INFO,
                 f"{name} was running although its desired state is stopped; stopping it.")
            report.repairs.append(name)
        elif obs is not None:
            new = _observed_fields(obs)
        else:
            new = (Instance.Status.STOPPED, "No workload exists.")
        if new is not None and new != current:
            updates[row["pk"]] = new

    _statuses_write_bulk(rows, updates, started=started, now=now)
    report.status_changes = len(updates)
    if to_pull:
        from .images import image_pull_request

        for image in sorted(to_pull):
            image_pull_request(image=image)
    from .rollouts import _enqueue_advance, rollouts_active

    for rollout_id in rollouts_active():  # a lost message costs one interval, no more
        _enqueue_advance(rollout_id)
    Activity.objects.bulk_create(activities)
    # Recovery first: what is owed is sent before the orphan bookkeeping, which may be slow on a
    # busy host and must never hold a converge back.
    report.enqueued = _owed_work_enqueue(now=now)
    for pk in to_enqueue:
        _enqueue("reconcile_instance", pk, next(r["name"] for r in rows if r["pk"] == pk))
    report.orphans = _orphans_report(orch, observed, _volumes_if_due(orch), busy,
                                     {r["name"] for r in rows})
    logger.info("reconcile_all on %s: %s", orch.backend_name, report)
    return report


def _pulls_waited_for(rows) -> dict:
    """The ImagePull rows of the images that instances in `pulling` wait for (one query)."""
    from ..models import ImagePull

    images = {r["image"] or settings.CLAWORC_AGENT_IMAGE for r in rows
              if r["status"] == Instance.Status.PULLING}
    return {p.image: p for p in ImagePull.objects.filter(image__in=images)} if images else {}


def _pulling_check(row, pulls, now, to_enqueue, to_pull, note) -> None:
    """An instance waits for its image: leave it while the pull lives; otherwise carry on.

    A pull that died with its worker (its heartbeat is old) is requested again, and the host
    resumes from what it had downloaded; a finished pull whose reconcile was lost is followed up.
    """
    from ..models import ImagePull
    from .images import pull_is_alive

    image = row["image"] or settings.CLAWORC_AGENT_IMAGE
    pull = pulls.get(image)
    if pull is not None and pull_is_alive(pull, now):
        return
    if pull is not None and pull.state == ImagePull.State.DONE:
        to_enqueue.append(row["pk"])
        return
    if image not in to_pull:
        note(row, "pull", Activity.Result.INFO,
             f"The pull of {image} stopped without a result (its worker died?); pulling it "
             "again, from what the host already downloaded.")
    to_pull.add(image)


def _crash_log_tails(orch, rows, observed, busy) -> dict[str, str]:
    """The log tails of the instances that crashed, read concurrently (CRASH_LOG_READERS at a
    time): many crashing at once must not cost one log request after the other."""
    crashed = [
        r["name"] for r in rows
        if r["desired_state"] == Instance.DesiredState.RUNNING and r["name"] not in busy
        and r["status"] != Instance.Status.ERROR and (obs := observed.get(r["name"])) is not None
        and is_crash(obs.exit_code)
        and obs.status in (ObservedStatus.STOPPED, ObservedStatus.CREATING)
    ]

    def tail(name: str) -> str:
        try:
            text = orch.logs(name, lines=LOG_TAIL_LINES).strip()
        except (FinalError, TransientError):
            text = observed[name].log_tail.strip()
        # No log at all: its process may never have run (a mount missing, an exec that
        # failed); the backend's own account of the exit says why.
        return text or _crash_reason(orch, name, observed[name].exit_code)

    if len(crashed) < 2:
        return {name: tail(name) for name in crashed}
    with ThreadPoolExecutor(min(CRASH_LOG_READERS, len(crashed))) as pool:
        return dict(zip(crashed, pool.map(tail, crashed), strict=True))


#: Marks a "tail" that is the backend's account of a crash that left no log lines.
_NO_LOG = "\0"


def _crash_reason(orch, name: str, exit_code: int | None) -> str:
    """_NO_LOG + why the backend says the workload exited, when it says more than the code."""
    try:
        message = orch.status(name).message.strip()
    except (FinalError, TransientError):
        return _NO_LOG
    prefix = f"exited with code {exit_code}"
    if message.lower().startswith(prefix):
        message = message[len(prefix):].lstrip(": ")
    return _NO_LOG + message


def _config_drift(orch, row, obs) -> str:
    """"missing" or "changed" when the config the backend holds (the Docker host's file, the
    ConfigMap) is not the spec's; "" when it is, or when the backend did not look."""
    if obs.config_digest is None:
        return ""
    wanted = orch.config_digest(row["clawdbot_config"] or {})
    if wanted is None or wanted == obs.config_digest:
        return ""
    return "missing" if obs.config_digest == "" else "changed"


def _owed_work_enqueue(*, now) -> list[str]:
    """Send a converge for every instance that owes work, whose lease is free and that was not
    handed to the broker recently: recovery by query, whatever became of earlier messages."""
    owed = list(
        Instance.objects.owing_work()
        .exclude(name__in=leases_held())
        # Waiting for an image: the pull carries them on when it ends (see _pulling_check).
        .exclude(status=Instance.Status.PULLING)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - enqueue_grace()))
        .values_list("pk", "name")
    )
    if owed:
        Instance.objects.filter(pk__in=[pk for pk, _ in owed]).update(enqueued_at=now)
        for pk, name in owed:
            _enqueue("reconcile_instance", pk, name)
    return [name for _, name in owed]


def _timed_out(orch, row, obs, now, timeout, report, note):
    """An intent still being carried out keeps its transitional status, up to the timeout."""
    status = row["status"]
    if status == Instance.Status.DELETING or status not in Instance.TRANSITIONAL:
        return None
    if _age(row, now) <= timeout:
        return None
    detail = obs.message if obs is not None and obs.message else (
        "no workload exists: is a Celery worker running and able to reach the backend?"
        if obs is None else f"the workload is {obs.status}")
    text = troubleshooting_message(
        orch=orch, name=row["name"], workload_exists=obs is not None,
        error=f"Still {status} after {timeout} s (CLAWORC_CREATING_TIMEOUT): {detail}.")
    note(row, "timeout", Activity.Result.ERROR, text)
    report.errors.append(row["name"])
    return (Instance.Status.ERROR, text)


def _running_wanted(orch, row, obs, now, timeout, report, note, tails):
    """The new (status, message) of an instance meant to run, noting repairs; None = unchanged."""
    name, status = row["name"], row["status"]
    if status == Instance.Status.ERROR and (
            row["converge_failed"] or obs is None or obs.status != ObservedStatus.RUNNING):
        # A person must act (the message says what); retrying would hide it. A backend's refusal
        # of an edit stays shown although the old workload still runs.
        return None
    timed_out = _timed_out(orch, row, obs, now, timeout, report, note)
    if timed_out:
        return timed_out
    if obs is None:
        if status == Instance.Status.CREATING:
            return None  # its creation is queued or in flight
        note(row, "drift", Activity.Result.INFO,
             f"The workload of {name} is missing (removed outside Claworc); recreating it.")
        report.repairs.append(name)
        return (Instance.Status.CREATING, "Recreating: the workload was removed outside Claworc.")
    crashed = is_crash(obs.exit_code)
    drift = _config_drift(orch, row, obs)
    # A restart policy makes a crashing container "restarting": still a crash, shown at once.
    if obs.status == ObservedStatus.STOPPED or (obs.status == ObservedStatus.CREATING and crashed):
        if crashed and drift == "missing":
            # Its cause is known and Claworc's to repair: the workload cannot start without it.
            note(row, "drift", Activity.Result.INFO,
                 f"{name} exited with code {obs.exit_code} and cannot start again: its config "
                 "file is missing (deleted outside Claworc). Rewriting it and starting it.")
            report.repairs.append(name)
            return (Instance.Status.CREATING,
                    "Starting: its config file was deleted outside Claworc; rewriting it.")
        if crashed:
            tail = tails[name] if name in tails else obs.log_tail.strip()
            if tail.startswith(_NO_LOG):
                # Nothing in the log to look at: say what the backend said, not "check the logs".
                reason = tail[len(_NO_LOG):]
                text = troubleshooting_message(
                    orch=orch, name=name, workload_exists=False,
                    error=f"Exited with code {obs.exit_code}" + (f": {reason}" if reason else "")
                    + ". It wrote no log lines.")
            else:
                text = troubleshooting_message(
                    orch=orch, name=name, error=f"Exited with code {obs.exit_code}."
                    + (f" Last log lines:\n{tail}\n" if tail else ""))
            note(row, "crash", Activity.Result.ERROR, text)
            report.errors.append(name)
            return (Instance.Status.ERROR, text)
        if status == Instance.Status.CREATING:
            return None
        note(row, "drift", Activity.Result.INFO,
             f"{name} was stopped outside Claworc (exit code {obs.exit_code}); starting it.")
        report.repairs.append(name)
        return (Instance.Status.CREATING, "Starting: it was stopped outside Claworc.")
    if drift:
        what = "deleted" if drift == "missing" else "changed"
        note(row, "drift", Activity.Result.INFO,
             f"The config of {name} was {what} outside Claworc; rewriting it from the spec.")
        report.repairs.append(name)
        return (Instance.Status.RESTARTING,
                f"Restarting: its config was {what} outside Claworc; rewriting it.")
    return _observed_fields(obs)


def _statuses_write_bulk(rows, updates, *, started: datetime, now: datetime) -> None:
    """Write changed statuses in one statement and record that every row read was observed.

    A row written by a worker since `started` is newer than what we saw: left alone.
    """
    untouched = Q(status_observed_at__isnull=True) | Q(status_observed_at__lt=started)
    with transaction.atomic():
        fresh = set(
            Instance.objects.select_for_update().filter(untouched, pk__in=list(updates))
            .values_list("pk", flat=True)
        ) if updates else set()
        before = {r["pk"]: r["status"] for r in rows}
        objs = []
        for pk, (status, message) in updates.items():
            if pk in fresh:
                # status_since moves only with the status: the "creating" timeout runs from it.
                since = F("status_since") if before[pk] == status else now
                objs.append(Instance(pk=pk, status=status, status_message=message,
                                     status_observed_at=now, status_since=since))
        if objs:
            Instance.objects.bulk_update(
                objs, ["status", "status_message", "status_observed_at", "status_since"],
                batch_size=500,
            )
        if rows:
            # Every row read was observed now (none created since: their pk is higher), told
            # with one record instead of a write to each row (Instance.last_observed).
            swept = sweep_format(through_pk=max(before), at=now)
            if not Setting.objects.filter(key=SWEPT_SETTING).update(value=swept):
                Setting.objects.create(key=SWEPT_SETTING, value=swept)


def _volumes_if_due(orch: Orchestrator) -> dict[str, list[str]] | None:
    """orch.volumes_all() when due (see VOLUMES_EVERY), else None."""
    key = _VOLUMES_LISTED_AT + orch.backend_name
    last = parse_datetime(Setting.get_str(key) or "")
    now = timezone.now()
    every = timedelta(seconds=VOLUMES_EVERY * settings.CLAWORC_RECONCILE_INTERVAL)
    # A delete is reported as an orphan only once older than lease_ttl() (its teardown has run):
    # until then, keep listing.
    if last is not None and now - last < every and not Activity.objects.filter(
            action="delete", created_at__gte=last - lease_ttl()).exists():
        return None
    volumes = orch.volumes_all()
    Setting.set(key, now.isoformat())  # `now` is before the list: a delete since is seen next
    return volumes


def _orphans_report(orch, observed, volumes, busy, known: set[str]) -> list[str]:
    """Managed workloads, or volumes, with no Instance row (`known`: the names read at the
    start): listed in OrphanWorkload, never deleted."""
    now = timezone.now()
    candidates = {n: (str(o.status), o.message) for n, o in observed.items()}
    if volumes is None:  # not listed this beat: the volumes-only orphans known stay as they are
        candidates.update((name, (status, message)) for name, status, message in (
            OrphanWorkload.objects.filter(backend=orch.backend_name, status=VOLUMES_ONLY)
            .values_list("name", "status", "message")))
        volumes = {}
    for name, names in volumes.items():
        # Volumes kept by "delete keeping volumes", or left by a teardown that failed half-way.
        candidates.setdefault(name, (
            VOLUMES_ONLY,
            f"{len(names)} volume(s) with no container: {', '.join(names)}. Create an instance "
            f"named {name} to use them again, or remove them by hand.",
        ))
    candidates = {n: c for n, c in candidates.items() if n not in known and n not in busy}
    if candidates:
        # Looked up now, after the list calls: a row created (and its workload made) since the
        # rows were read at the start is not an orphan. A row being deleted keeps its name.
        late = set(Instance.objects.filter(name__in=list(candidates))
                   .values_list("name", flat=True))
        candidates = {n: c for n, c in candidates.items() if n not in late}
    if candidates:
        # A row deleted a moment ago whose teardown has not run yet is not an orphan.
        recent = set(Activity.objects.filter(
            instance_name__in=list(candidates), action="delete",
            created_at__gte=now - lease_ttl(),
        ).values_list("instance_name", flat=True))
        candidates = {n: c for n, c in candidates.items() if n not in recent}
    new = _orphans_write(orch.backend_name, candidates, now)
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


def _orphans_write(backend: str, candidates: dict[str, tuple[str, str]],
                   now: datetime) -> list[str]:
    """Store `candidates` ({name: (status, message)}) as this backend's orphans, in a constant
    number of statements however many there are; return the names that are new."""
    existing = {o.name: o for o in OrphanWorkload.objects.filter(name__in=list(candidates))}
    new, changed = [], []
    for name, (status, message) in candidates.items():
        row = existing.get(name)
        if row is None:
            new.append(OrphanWorkload(name=name, backend=backend, status=status, message=message,
                                      last_seen=now))
        elif (row.backend, row.status, row.message) != (backend, status, message):
            row.backend, row.status, row.message, row.last_seen = backend, status, message, now
            changed.append(row)
    OrphanWorkload.objects.bulk_create(new, batch_size=500)
    OrphanWorkload.objects.bulk_update(changed, ["backend", "status", "message", "last_seen"],
                                       batch_size=500)
    unchanged = set(existing) - {row.name for row in changed}
    if unchanged:
        OrphanWorkload.objects.filter(name__in=list(unchanged)).update(last_seen=now)
    OrphanWorkload.objects.filter(backend=backend).exclude(name__in=list(candidates)).delete()
    return [row.name for row in new]
