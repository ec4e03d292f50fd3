"""Web side: record what staff asked for, then hand its execution to a worker once committed.

Each intent is one function that says what it changes. It locks the rows, checks the transition,
bumps the row's `generation` (or a one-shot counter) in the same transaction, sets the
transitional status the UI shows, records an Activity and enqueues a task on commit; none of them
calls an orchestrator. A task that could not be sent (no broker) costs nothing but time: the row
still owes the work, and reconcile_all sends it again (`Instance.objects.owing_work()`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce, Now

from ..models import CONVERGE_FIELDS, Activity, Instance
from . import capacity
from .audit import SYSTEM, acting_as, current_actor

logger = logging.getLogger(__name__)

PENDING_NOTE = ("No worker can be reached now (the broker did not answer): it will be carried "
                "out as soon as one can.")

# --- Enqueueing (always after commit: a worker must see the committed row) -----------------------

#: Lists collecting the names whose task could not be sent (see `collecting_unsent`).
_unsent: contextvars.ContextVar[tuple[list[str], ...]] = contextvars.ContextVar(
    "claworc_unsent", default=())


@contextlib.contextmanager
def collecting_unsent() -> Iterator[list[str]]:
    """Collect the instance names whose task could not be sent by the commits made inside."""
    found: list[str] = []
    token = _unsent.set((*_unsent.get(), found))
    try:
        yield found
    finally:
        _unsent.reset(token)


def _send(task_name: str, args: list, *, pk: int | None, name: str,
          activity_ids: tuple[int, ...] = ()) -> None:
    """Hand a task to the broker. When none answers, the intent stays recorded (and owed)."""
    from .. import tasks

    try:
        getattr(tasks, task_name).apply_async(args=args)
    except Exception as exc:  # noqa: BLE001 - any broker failure: the row still owes the work
        logger.warning("could not send %s for %s (%s); reconcile_all will", task_name, name,
                       type(exc).__name__)
        if pk is not None:
            Instance.objects.filter(pk=pk).update(enqueued_at=None)
        for activity in Activity.objects.filter(pk__in=activity_ids):
            activity.result = Activity.Result.PENDING
            activity.message = " ".join(filter(None, [activity.message, PENDING_NOTE]))
            activity.save(update_fields=["result", "message"])
        for collected in _unsent.get():
            collected.append(name)


@dataclass
class _SendOnCommit:
    """A task to send once the transaction commits (the worker must see the committed row)."""

    key: tuple
    send: Callable[[], None]
    done: bool = False

    def __call__(self) -> None:
        self.done = True
        self.send()


def _on_commit_once(key: tuple, send: Callable[[], None]) -> None:
    """Send after commit, unless the same task already waits for this commit: an edit and a key
    change saved together are one intent and one converge (it reads the row as committed)."""
    connection = transaction.get_connection()
    if connection.in_atomic_block:
        for _savepoints, waiting, _robust in connection.run_on_commit:
            if isinstance(waiting, _SendOnCommit) and waiting.key == key and not waiting.done:
                return
    transaction.on_commit(_SendOnCommit(key=key, send=send))


def _enqueue(task_name: str, pk: int, name: str, activity_ids: tuple[int, ...] = ()) -> None:
    _on_commit_once((task_name, pk), functools.partial(
        _send, task_name, [pk], pk=pk if task_name == "reconcile_instance" else None, name=name,
        activity_ids=activity_ids))


# --- Intents -------------------------------------------------------------------------------------

@dataclass
class Queued:
    """What a bulk service call queued, and what it skipped with the reason (for message_user)."""

    verb: str
    queued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Saved, but their task could not be sent (no broker): carried out when a worker can be.
    pending: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        sent = [n for n in self.queued if n not in self.pending]
        if sent:
            parts.append(f"Queued {self.verb} of {len(sent)} instance"
                         f"{'s' if len(sent) != 1 else ''}: {', '.join(sent)}.")
        if self.pending:
            parts.append(f"Saved {self.verb} of {', '.join(self.pending)}. {PENDING_NOTE}")
        if self.skipped:
            parts.append("Skipped " + "; ".join(f"{n} ({why})" for n, why in self.skipped) + ".")
        return " ".join(parts) or f"Nothing to {self.verb}."


Check = Callable[[Instance], str]  # returns why the transition is refused, "" when allowed

#: Bumps the generation: what should run has changed (the worker converges to it).
BUMP = {"generation": F("generation") + 1,
        "owed_since": Coalesce(F("owed_since"), Now())}


def _status_to(status: str, message: str) -> dict:
    """The update that shows a transitional status at once (the worker replaces it)."""
    return {"status": Value(status), "status_message": Value(message),
            "status_since": Case(When(~Q(status=status), then=Now()), default=F("status_since"))}


def _refuse_deleting(row: Instance) -> str:
    return "being deleted" if row.status == Instance.Status.DELETING else ""


def _change(
    *, instance_ids: Iterable[int], verb: str, action: str, actor: str | None,
    changes: dict, check: Check | None = None, message: str = "",
    task: str = "reconcile_instance", messages: Mapping[int, str] | None = None,
    admit: bool = False,
) -> Queued:
    """Lock the rows, check each transition, save `changes`, record, enqueue on commit.

    `messages` (by id) replaces `message` in the Activity of those rows (the schedule names each
    instance's own window). `admit`: the change makes stopped instances run; each must fit the
    capacity budget, in pk order (what fits starts, the rest is skipped with the numbers)."""
    outcome = Queued(verb=verb)
    actor = actor or current_actor()
    with collecting_unsent() as unsent:
        with transaction.atomic():
            rows = list(
                Instance.objects.select_for_update().filter(pk__in=list(instance_ids))
                .only("pk", "name", "status", "desired_state", *capacity.RESIZE_FIELDS)
                .order_by("pk")
            )
            allowed = []
            for row in rows:
                reason = _refuse_deleting(row) or (check(row) if check else "")
                if reason:
                    outcome.skipped.append((row.name, reason))
                else:
                    allowed.append(row)
            if admit and allowed:
                # After the rows' locks, as every writer takes them: no lock-order deadlock.
                allowed, refused = capacity.admit_starts(allowed)
                outcome.skipped += refused
            if not allowed:
                return outcome
            marks = {"version": F("version") + 1}
            if task == "reconcile_instance":
                marks["enqueued_at"] = Now()
            Instance.objects.filter(pk__in=[r.pk for r in allowed]).update(**changes, **marks)
            records = Activity.objects.bulk_create(
                Activity(instance_id=r.pk, instance_name=r.name, action=action, actor=actor,
                         result=Activity.Result.QUEUED,
                         message=(messages or {}).get(r.pk, message))
                for r in allowed
            )
            for row, record in zip(allowed, records, strict=True):
                _enqueue(task, row.pk, row.name, (record.pk,) if record.pk else ())
                outcome.queued.append(row.name)
    outcome.pending = [n for n in outcome.queued if n in unsent]
    logger.info("%s queued by %s for %s", action, actor, ", ".join(outcome.queued))
    return outcome


def instance_create(*, display_name: str, name: str = "", actor: str | None = None,
                    **fields) -> Instance:
    """Create and validate an instance; the post_save signal provisions it on commit."""
    with acting_as(actor or current_actor()), transaction.atomic():
        instance = Instance(display_name=display_name, name=name, **fields)
        instance.full_clean()
        instance.save()  # post_save: instance_provision admits it, or raises CapacityExceeded
    return instance


def instance_provision(*, instance: Instance) -> None:
    """A new Instance row exists (admin, shell or code): record it and enqueue its creation.

    Its generation (1) is ahead of what was converged (0) from the start, so a lost message
    costs one reconcile interval, never the instance. One meant to run must fit the capacity
    budget: CapacityExceeded otherwise (the saving transaction rolls back; nothing is made).
    """
    capacity.check_fits(instance=instance)
    if instance.desired_state == Instance.DesiredState.STOPPED:
        message = ("Created stopped: nothing is provisioned until it is started (the port pair, "
                   "four volumes, config file and container are made then).")
    else:
        message = "Provisioning: port pair, four volumes, config file and container."
    Instance.objects.filter(pk=instance.pk).update(enqueued_at=Now())
    record = Activity.objects.create(
        instance_id=instance.pk, instance_name=instance.name, action="create",
        actor=current_actor(), result=Activity.Result.QUEUED, message=message,
    )
    _enqueue("reconcile_instance", instance.pk, instance.name, (record.pk,))


def instance_update(*, instance: Instance, actor: str | None = None,
                    expected_version: int | None = None, **changes) -> Queued:
    """Change fields of an instance; a change to what it runs with converges the workload.

    The name cannot change, and the desired state only through Start and Stop. With
    `expected_version` (what a form was opened at), a row changed since is refused (StaleWrite).
    """
    if "name" in changes and changes["name"] != instance.name:
        raise ValidationError({"name": f"The name of an instance cannot change (it is "
                                       f"{instance.name})."})
    if "desired_state" in changes and changes["desired_state"] != instance.desired_state:
        raise ValidationError({"desired_state": "Use Start or Stop to change the desired state."})
    changes.pop("name", None)
    changes.pop("desired_state", None)
    for key, value in changes.items():
        setattr(instance, key, value)
    instance.full_clean()
    with transaction.atomic(), acting_as(actor or current_actor()):
        if expected_version is not None:
            stale_check(pk=instance.pk, expected_version=expected_version)
        instance.save(update_fields=[*changes, "updated_at"])  # post_save: instance_saved
    return getattr(instance, "last_converge", None) or Queued(verb="update")


class StaleWrite(ValidationError):
    """The row changed since the form was opened: nothing was saved."""


def stale_check(*, pk: int, expected_version: int) -> None:
    """Raise StaleWrite when instance `pk` is no longer at `expected_version` (locks the row)."""
    current = (Instance.objects.select_for_update().filter(pk=pk)
               .values_list("version", flat=True).first())
    if current is None or current == expected_version:
        return
    # What people asked for since (the worker's own records are not changes to the row).
    recent = Activity.objects.filter(
        instance_id=pk, result__in=[Activity.Result.QUEUED, Activity.Result.PENDING],
    ).order_by("-id")[:max(1, min(3, current - expected_version))]
    what = "; ".join(f"{a.action} by {a.actor} at {a.created_at:%H:%M:%S}" for a in recent)
    raise StaleWrite(f"This instance was changed since you opened it: {what or 'an edit'}; "
                     "reload the page and make your change again. Nothing was saved.")


def instance_saved(*, instance: Instance) -> Queued:
    """An existing row was saved (admin, shell, code): converge when what it runs with changed.

    The outcome is left on `instance.last_converge` for the caller that saved it.
    """
    changed = instance.changed_spec_fields()
    if capacity.RESIZE_FIELDS.intersection(changed):
        capacity.check_fits(instance=instance)  # a resize: the saving transaction rolls back
    instance.remember_saved_spec()
    instance.last_converge = instances_converge_if_changed(instance=instance, changed=changed)
    if not instance.last_converge.queued:
        Instance.objects.filter(pk=instance.pk).update(version=F("version") + 1)
    return instance.last_converge


def instances_converge_if_changed(*, instance: Instance, changed: Iterable[str],
                                  actor: str | None = None) -> Queued:
    """Enqueue a reconcile when any of `changed` (field names) is in CONVERGE_FIELDS."""
    spec_changed = sorted(set(changed) & set(CONVERGE_FIELDS))
    if not spec_changed:
        return Queued(verb="update")
    shown = ", ".join("API keys" if f == "encrypted_api_keys" else f for f in spec_changed)
    return instances_reconcile(
        instance_ids=[instance.pk], actor=actor or current_actor(), action="update",
        message=f"Changed {shown}; converging the workload.",
    )


def instances_reconcile(
    *, instance_ids: Iterable[int], actor: str = SYSTEM, action: str = "reconcile",
    message: str = "",
) -> Queued:
    """What the instances run with changed (API keys, the spec): a new generation to converge to.

    The reconcile converges it (ensure() recreates a Docker container on a new env).
    """
    return _change(instance_ids=instance_ids, verb=action, action=action, actor=actor,
                   changes=dict(BUMP), message=message or "Converging to the current settings.")


def _refuse_if(state: str, status: str, reason: str) -> Check:
    return lambda row: reason if (row.desired_state, row.status) == (state, status) else ""


def _desired(state: str) -> dict:
    """Set the desired state; a change of it is a new generation."""
    return {"desired_state": Value(state),
            "generation": F("generation") + Case(When(~Q(desired_state=state), then=1),
                                                 default=0),
            "owed_since": Coalesce(F("owed_since"), Now())}


def instance_start(*, instance_ids: Iterable[int], actor: str | None = None,
                   messages: Mapping[int, str] | None = None) -> Queued:
    """Make the instances run. Those that do not fit the capacity budget, taken in pk order,
    are skipped with the numbers (`Queued.skipped`), like any other refusal."""
    return _change(
        instance_ids=instance_ids, verb="start", action="start", actor=actor, messages=messages,
        changes={**BUMP, "desired_state": Value(Instance.DesiredState.RUNNING),
                 **_status_to(Instance.Status.STARTING, "Starting: queued.")},
        check=_refuse_if(Instance.DesiredState.RUNNING, Instance.Status.RUNNING,
                         "already running"),
        admit=True,
    )


ALREADY_STOPPED = "already stopped"


def instance_stop(*, instance_ids: Iterable[int], actor: str | None = None,
                  messages: Mapping[int, str] | None = None) -> Queued:
    outcome = _change(
        instance_ids=instance_ids, verb="stop", action="stop", actor=actor, messages=messages,
        changes={**BUMP, "desired_state": Value(Instance.DesiredState.STOPPED),
                 **_status_to(Instance.Status.STOPPING, "Stopping: queued.")},
        check=_refuse_if(Instance.DesiredState.STOPPED, Instance.Status.STOPPED,
                         ALREADY_STOPPED),
    )
    _end_refused_scheduled_starts(outcome, actor or current_actor())
    return outcome


def _end_refused_scheduled_starts(outcome: Queued, actor: str) -> None:
    """A Stop of a stopped bot changes nothing, its version included, and a scheduled start
    that admission refused is tried again on each beat while the version stands
    (services/schedules.py). Such a Stop still says "keep it stopped": it ends those retries,
    and the refusal is no longer shown."""
    from .schedules import REFUSED

    names = [name for name, reason in outcome.skipped if reason == ALREADY_STOPPED]
    if not names:
        return
    with transaction.atomic():
        rows = list(Instance.objects.select_for_update()
                    .filter(name__in=names, auto_kind=REFUSED, auto_version=F("version"))
                    .only("pk", "name"))
        if not rows:
            return
        Instance.objects.filter(pk__in=[r.pk for r in rows]).update(auto_kind="", auto_note="")
        text = "Already stopped; its refused scheduled start is no longer tried in this window."
        Activity.objects.bulk_create(
            Activity(instance_id=r.pk, instance_name=r.name, action="stop", actor=actor,
                     result=Activity.Result.INFO, message=text) for r in rows)
    ended = {r.name for r in rows}
    outcome.skipped = [
        (name, f"{reason}; its refused scheduled start is no longer tried" if name in ended
         else reason) for name, reason in outcome.skipped]


def instance_restart(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    """Restart the workload; a stopped instance is started (its desired state becomes running)."""
    return _change(
        instance_ids=instance_ids, verb="restart", action="restart", actor=actor,
        changes={**_desired(Instance.DesiredState.RUNNING),
                 "restart_requested": F("restart_requested") + 1,
                 **_status_to(Instance.Status.RESTARTING, "Restarting: queued.")},
        admit=True,
    )


def instance_recreate(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    """Replace the workload with one built from the current spec; volumes persist."""
    return _change(
        instance_ids=instance_ids, verb="recreate", action="recreate", actor=actor,
        changes={**_desired(Instance.DesiredState.RUNNING),
                 "recreate_requested": F("recreate_requested") + 1,
                 **_status_to(Instance.Status.RECREATING, "Recreating: queued.")},
        admit=True,
    )


def instance_refresh(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    """Read the workload's state again (no change is made to it)."""
    return _change(instance_ids=instance_ids, verb="status refresh", action="refresh",
                   actor=actor, changes={}, task="observe_instance")


def instance_delete(*, instance_ids: Iterable[int], keep_volumes: bool | None = None,
                    actor: str | None = None) -> Queued:
    """Mark the rows `deleting` (name and ports stay reserved) and enqueue their teardown; the
    worker removes each row once its workload is gone. `keep_volumes` None: each row's own flag.
    """
    changes = {**BUMP, **_status_to(Instance.Status.DELETING, "Deleting: queued.")}
    if keep_volumes is not None:
        changes["keep_volumes"] = Value(keep_volumes)
    verb = {True: "deletion (volumes kept)", False: "deletion", None: "deletion"}[keep_volumes]
    ids = list(instance_ids)
    volumes = dict(Instance.objects.filter(pk__in=ids).values_list("pk", "keep_volumes"))
    outcome = Queued(verb=verb)
    # One Activity message per volume policy, so each says what happens to the data.
    for keep in (True, False):
        group = [pk for pk in ids if (keep_volumes if keep_volumes is not None
                                      else volumes.get(pk)) is keep]
        if not group:
            continue
        part = _change(
            instance_ids=group, verb=verb, action="delete", actor=actor, changes=changes,
            message="Removing container, config directory"
            + ("; the volumes are kept." if keep else " and the four volumes."),
        )
        outcome.queued += part.queued
        outcome.skipped += part.skipped
        outcome.pending += part.pending
    return outcome


def instance_teardown_enqueue(*, name: str, purge_volumes: bool) -> None:
    """Remove what is left under `name` with no Instance row (an orphan's workload, config and,
    with `purge_volumes`, volumes) once committed; a row of that name is never touched."""
    record = Activity.objects.create(
        instance_name=name, action="delete", result=Activity.Result.QUEUED,
        actor=current_actor(),
        message="Removing container, config directory"
        + (" and the four volumes." if purge_volumes else "; the volumes are kept."),
    )
    _on_commit_once(("teardown_instance", name), functools.partial(
        _send, "teardown_instance", [name, purge_volumes], pk=None, name=name,
        activity_ids=(record.pk,)))
