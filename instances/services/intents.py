"""Web side: record what staff asked for and enqueue its execution once committed.

Every function here locks the rows, checks the transition, saves the desired state, records an
Activity and enqueues a task on commit; none of them calls an orchestrator.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.db import transaction

from ..models import CONVERGE_FIELDS, Activity, Instance
from .audit import SYSTEM, acting_as, activity_record, current_actor

logger = logging.getLogger(__name__)

# --- Enqueueing (always after commit: a worker must see the committed row) -----------------------

def _enqueue_reconcile(pk: int) -> None:
    from ..tasks import reconcile_instance

    reconcile_instance.delay_on_commit(pk)


def _enqueue_observe(pk: int) -> None:
    from ..tasks import observe_instance

    observe_instance.delay_on_commit(pk)


def _enqueue_teardown(name: str, purge_volumes: bool) -> None:
    from ..tasks import teardown_instance

    teardown_instance.delay_on_commit(name, purge_volumes)


# --- Web side: change the desired state, record, enqueue ----------------------------------------

@dataclass
class Queued:
    """What a bulk service call queued, and what it skipped with the reason (for message_user)."""

    verb: str
    queued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        parts = []
        if self.queued:
            parts.append(f"Queued {self.verb} of {len(self.queued)} instance"
                         f"{'s' if len(self.queued) != 1 else ''}: {', '.join(self.queued)}.")
        if self.skipped:
            parts.append("Skipped " + "; ".join(f"{n} ({why})" for n, why in self.skipped) + ".")
        return " ".join(parts) or f"Nothing to {self.verb}."


Check = Callable[[Instance], str]  # returns why the transition is refused, "" when allowed


def _change(
    *, instance_ids: Iterable[int], verb: str, action: str, actor: str | None,
    changes: dict, check: Check | None = None, message: str = "",
    enqueue: Callable[[int], None] = _enqueue_reconcile,
) -> Queued:
    """Lock the rows, check each transition, save `changes`, record, enqueue on commit."""
    outcome = Queued(verb=verb)
    actor = actor or current_actor()
    with transaction.atomic():
        rows = list(
            Instance.objects.select_for_update().filter(pk__in=list(instance_ids))
            .only("pk", "name", "status", "desired_state").order_by("pk")
        )
        allowed = []
        for row in rows:
            reason = check(row) if check else ""
            if reason:
                outcome.skipped.append((row.name, reason))
            else:
                allowed.append(row)
        if not allowed:
            return outcome
        if changes:
            Instance.objects.filter(pk__in=[r.pk for r in allowed]).update(**changes)
        Activity.objects.bulk_create(
            Activity(instance_id=r.pk, instance_name=r.name, action=action, actor=actor,
                     result=Activity.Result.QUEUED, message=message)
            for r in allowed
        )
        for row in allowed:
            enqueue(row.pk)
            outcome.queued.append(row.name)
    logger.info("%s queued by %s for %s", action, actor, ", ".join(outcome.queued))
    return outcome


def instance_create(*, display_name: str, name: str = "", actor: str | None = None,
                    **fields) -> Instance:
    """Create and validate an instance; the post_save signal provisions it on commit."""
    with acting_as(actor or current_actor()):
        instance = Instance(display_name=display_name, name=name, **fields)
        instance.full_clean()
        instance.save()
    return instance


def instance_provision(*, instance: Instance) -> None:
    """A new Instance row exists (admin, shell or code): record it and enqueue its creation."""
    activity_record(
        instance_id=instance.pk, instance_name=instance.name, action="create",
        result=Activity.Result.QUEUED,
        message="Provisioning: port pair, four volumes, config file and container.",
    )
    _enqueue_reconcile(instance.pk)


def instance_update(*, instance: Instance, actor: str | None = None, **changes) -> Queued:
    """Change fields of an instance; a change to what it runs with converges the workload."""
    for key, value in changes.items():
        setattr(instance, key, value)
    instance.full_clean()
    with transaction.atomic(), acting_as(actor or current_actor()):
        instance.save(update_fields=[*changes, "updated_at"])  # post_save: instance_saved
    return getattr(instance, "last_converge", None) or Queued(verb="update")


def instance_saved(*, instance: Instance) -> Queued:
    """An existing row was saved (admin, shell, code): converge when what it runs with changed.

    The outcome is left on `instance.last_converge` for the caller that saved it.
    """
    changed = instance.changed_spec_fields()
    instance.remember_saved_spec()
    instance.last_converge = instances_converge_if_changed(instance=instance, changed=changed)
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
    """Record an Activity per instance and enqueue reconcile_instance(pk) once committed.

    Used after anything the workload is built from changed (global API keys, an override, the
    config): the reconcile converges it (ensure() recreates a Docker container on a new env).
    """
    return _change(instance_ids=instance_ids, verb=action, action=action, actor=actor,
                   changes={}, message=message or "Converging to the current settings.")


def _refuse_if(state: str, status: str, reason: str) -> Check:
    return lambda row: reason if (row.desired_state, row.status) == (state, status) else ""


def instance_start(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    return _change(
        instance_ids=instance_ids, verb="start", action="start", actor=actor,
        changes={"desired_state": Instance.DesiredState.RUNNING},
        check=_refuse_if(Instance.DesiredState.RUNNING, Instance.Status.RUNNING,
                         "already running"),
    )


def instance_stop(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    return _change(
        instance_ids=instance_ids, verb="stop", action="stop", actor=actor,
        changes={"desired_state": Instance.DesiredState.STOPPED,
                 "requested_action": Instance.RequestedAction.NONE},
        check=_refuse_if(Instance.DesiredState.STOPPED, Instance.Status.STOPPED,
                         "already stopped"),
    )


def instance_restart(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    """Restart the workload; a stopped instance is started (its desired state becomes running)."""
    return _change(
        instance_ids=instance_ids, verb="restart", action="restart", actor=actor,
        changes={"desired_state": Instance.DesiredState.RUNNING,
                 "requested_action": Instance.RequestedAction.RESTART},
    )


def instance_recreate(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    """Replace the workload with one built from the current spec; volumes persist."""
    return _change(
        instance_ids=instance_ids, verb="recreate", action="recreate", actor=actor,
        changes={"desired_state": Instance.DesiredState.RUNNING,
                 "requested_action": Instance.RequestedAction.RECREATE},
    )


def instance_refresh(*, instance_ids: Iterable[int], actor: str | None = None) -> Queued:
    """Read the workload's state again (no change is made to it)."""
    return _change(instance_ids=instance_ids, verb="status refresh", action="refresh",
                   actor=actor, changes={}, enqueue=_enqueue_observe)


def instance_delete(*, instance_ids: Iterable[int], keep_volumes: bool,
                    actor: str | None = None) -> Queued:
    """Delete the rows; post_delete enqueues the teardown (volumes kept when `keep_volumes`).

    One QuerySet.delete() and one Activity insert for the whole selection: the same number of
    queries for 100 rows as for 10.
    """
    outcome = Queued(verb="deletion (volumes kept)" if keep_volumes else "deletion")
    with acting_as(actor or current_actor()), transaction.atomic(), _teardowns_batched() as done:
        pks = list(Instance.objects.select_for_update().filter(pk__in=list(instance_ids))
                   .values_list("pk", flat=True))
        chosen = Instance.objects.filter(pk__in=pks)
        chosen.update(keep_volumes=keep_volumes)  # what post_delete reads
        chosen.delete()  # post_delete → instance_teardown_enqueue, into `done`
        outcome.queued.extend(sorted(done))
    return outcome


_teardown_batch: contextvars.ContextVar[dict[str, bool] | None] = contextvars.ContextVar(
    "claworc_teardown_batch", default=None)


@contextlib.contextmanager
def _teardowns_batched():
    """Collect the teardowns post_delete asks for; record and enqueue them together at the end."""
    batch: dict[str, bool] = {}
    token = _teardown_batch.set(batch)
    try:
        yield batch
    finally:
        _teardown_batch.reset(token)
    Activity.objects.bulk_create(
        _teardown_activity(name, purge) for name, purge in sorted(batch.items()))
    for name, purge in sorted(batch.items()):
        _enqueue_teardown(name, purge)


def _teardown_activity(name: str, purge_volumes: bool) -> Activity:
    return Activity(
        instance_name=name, action="delete", result=Activity.Result.QUEUED, actor=current_actor(),
        message="Removing container, config directory"
        + (" and the four volumes." if purge_volumes else "; the volumes are kept."),
    )


def instance_teardown_enqueue(*, name: str, purge_volumes: bool) -> None:
    """An Instance row was deleted (ports went with it): remove its workload after commit."""
    batch = _teardown_batch.get()
    if batch is not None:  # a bulk delete records them all at once
        batch[name] = purge_volumes
        return
    _teardown_activity(name, purge_volumes).save()
    _enqueue_teardown(name, purge_volumes)
