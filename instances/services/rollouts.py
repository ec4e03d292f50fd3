"""Fleet image updates ("Update image" in the admin): one Rollout per image.

  rollout_start (web side)   → a Rollout and its steps (instances in batches of batch_size);
                               rollout_advance(id) enqueued on commit
  rollout_advance (worker)   → one short step each time, never waiting inside a task:
    resolving: ask the registry which digest the tag points at now
    pulling:   pull it once (the deduplicated pull of images.py; its end advances us)
    updating:  recreate the next batch (volumes kept) and come back every few seconds until
               each of its instances runs the digest; the first that fails stops the rollout,
               and the message says which instance, in which batch, and why
  reconcile_all              → advances every active rollout (a lost message costs one interval)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orchestrators.base import PullError

from ..models import Activity, ImagePull, Instance, Rollout, RolloutStep
from .audit import current_actor
from .images import image_pull_request, pull_is_alive, registry_auth_for

logger = logging.getLogger(__name__)

#: Seconds between two looks at a batch being recreated.
POLL_SECONDS = 2.0


def _enqueue_advance(rollout_id: int, countdown: float | None = None) -> None:
    from ..tasks import rollout_advance

    if countdown is None:
        rollout_advance.delay_on_commit(rollout_id)
    else:
        transaction.on_commit(lambda: rollout_advance.apply_async((rollout_id,),
                                                                  countdown=countdown))


def rollout_start(*, instance_ids: Iterable[int], batch_size: int,
                  actor: str | None = None) -> list[Rollout]:
    """Start updating the image of these instances: one rollout per image they run."""
    if batch_size < 1:
        raise ValueError("The batch size is at least 1.")
    actor = actor or current_actor()
    by_image: dict[str, list[Instance]] = {}
    for instance in Instance.objects.filter(pk__in=list(instance_ids)).order_by("name"):
        by_image.setdefault(instance.effective_image, []).append(instance)
    started = []
    with transaction.atomic():
        for image, instances in sorted(by_image.items()):
            rollout = Rollout.objects.create(image=image, batch_size=batch_size, actor=actor,
                                             message="Resolving the tag to a digest.")
            RolloutStep.objects.bulk_create(
                RolloutStep(rollout=rollout, instance=i, instance_name=i.name,
                            batch=n // batch_size) for n, i in enumerate(instances))
            Activity.objects.bulk_create(
                Activity(instance_id=i.pk, instance_name=i.name, action="update image",
                         actor=actor, result=Activity.Result.QUEUED,
                         message=f"Update of {image} (rollout #{rollout.pk}), batch "
                                 f"{n // batch_size + 1}.")
                for n, i in enumerate(instances))
            _enqueue_advance(rollout.pk)
            started.append(rollout)
    for rollout in started:
        logger.info("rollout #%s of %s started by %s", rollout.pk, rollout.image, actor)
    return started


def instances_on_images(*, instance_ids: Iterable[int]) -> list[int]:
    """Every instance running one of the images that these instances run."""
    images = {i.effective_image for i in Instance.objects.filter(pk__in=list(instance_ids))}
    return [i.pk for i in Instance.objects.all() if i.effective_image in images]


def rollouts_waiting_for(image: str) -> list[int]:
    return list(Rollout.objects.filter(image=image, state=Rollout.State.PULLING)
                .values_list("pk", flat=True))


def rollout_advance(*, rollout_id: int) -> str:
    """Take the rollout one step further; safe to run twice (the rows say where it is)."""
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update().filter(pk=rollout_id).first()
        if rollout is None or rollout.state not in Rollout.ACTIVE:
            return rollout.state if rollout else "gone"
        step = {Rollout.State.RESOLVING: _resolve, Rollout.State.PULLING: _after_pull,
                Rollout.State.UPDATING: _update}[rollout.state]
        return step(rollout)


def _fail(rollout: Rollout, message: str) -> str:
    rollout.state, rollout.message, rollout.finished_at = (
        Rollout.State.FAILED, message, timezone.now())
    rollout.save(update_fields=["state", "message", "finished_at"])
    rollout.steps.filter(state=RolloutStep.State.PENDING).update(state=RolloutStep.State.SKIPPED)
    logger.error("rollout #%s of %s stopped: %s", rollout.pk, rollout.image, message)
    return "failed"


def _resolve(rollout: Rollout) -> str:
    from orchestrators.registry import get_orchestrator

    orch = get_orchestrator()
    if orch.pulls_images:
        try:
            rollout.digest = orch.resolve_digest(rollout.image,
                                                 auth=registry_auth_for(rollout.image))
        except PullError as exc:
            return _fail(rollout, f"Could not resolve {rollout.image} to a digest: {exc}")
        # Pulled once, whatever the number of instances; "already there" is a quick pull.
        image_pull_request(image=rollout.image)
        rollout.state = Rollout.State.PULLING
        rollout.message = f"Pulling {rollout.image} ({rollout.digest})."
    else:
        # The cluster's kubelet pulls as each pod is recreated.
        rollout.state, rollout.message = Rollout.State.UPDATING, "Updating instances."
    rollout.save(update_fields=["digest", "state", "message"])
    if rollout.state == Rollout.State.UPDATING:
        _enqueue_advance(rollout.pk)
    return str(rollout.state)


def _after_pull(rollout: Rollout) -> str:
    pull = ImagePull.objects.filter(image=rollout.image).first()
    if pull is None or pull_is_alive(pull):
        return "pulling"  # the pull's end advances us; reconcile_all also looks
    if pull.state == ImagePull.State.ERROR:
        return _fail(rollout, f"The pull failed, no instance was touched: {pull.message}")
    if pull.state != ImagePull.State.DONE:
        image_pull_request(image=rollout.image)  # its worker died: pull again
        return "pulling"
    if rollout.digest and pull.digest and pull.digest != rollout.digest:
        rollout.message = (f"The tag moved during the rollout: the host pulled {pull.digest}; "
                           "updating to that.")
    rollout.digest = pull.digest or rollout.digest
    rollout.steps.filter(state=RolloutStep.State.PENDING, instance__running_digest=rollout.digest
                         ).exclude(instance__running_digest="").update(
        state=RolloutStep.State.CURRENT, message="Already runs this digest.")
    rollout.state = Rollout.State.UPDATING
    rollout.save(update_fields=["digest", "state", "message"])
    return _update(rollout)


def _update(rollout: Rollout) -> str:
    from .intents import instance_recreate

    steps = list(rollout.steps.exclude(state__in=[
        RolloutStep.State.DONE, RolloutStep.State.CURRENT]).select_related("instance"))
    if not steps:
        rollout.state, rollout.finished_at = Rollout.State.DONE, timezone.now()
        done = rollout.steps.filter(state=RolloutStep.State.DONE).count()
        rollout.message = f"Done: {done} instance(s) updated to {rollout.digest or rollout.image}."
        rollout.save(update_fields=["state", "finished_at", "message"])
        logger.info("rollout #%s of %s done", rollout.pk, rollout.image)
        return "done"
    batch = min(s.batch for s in steps)
    current = [s for s in steps if s.batch == batch]
    updating = [s for s in current if s.state == RolloutStep.State.UPDATING]
    if not updating and any(s.state == RolloutStep.State.FAILED for s in current):
        # A failure was seen while the rest of its batch finished: stop now.
        return _fail(rollout, rollout.message.replace("Stopping at", "Stopped at", 1))
    if not updating:
        # Start this batch: the recreate is the converge's, pull-first included (a no-op here).
        for s in current:
            if s.instance is None:
                return _fail(rollout, f"Stopped at batch {batch + 1}: {s.instance_name} was "
                                      "deleted during the rollout.")
        instance_recreate(instance_ids=[s.instance_id for s in current], actor=rollout.actor)
        RolloutStep.objects.filter(pk__in=[s.pk for s in current]).update(
            state=RolloutStep.State.UPDATING, message="Recreating (volumes kept).")
        rollout.batch_started_at = timezone.now()
        batches = max(rollout.steps.values_list("batch", flat=True)) + 1
        rollout.message = (f"Batch {batch + 1} of {batches}: "
                           f"recreating {', '.join(s.instance_name for s in current)}.")
        rollout.save(update_fields=["batch_started_at", "message"])
        _enqueue_advance(rollout.pk, countdown=POLL_SECONDS)
        return "updating"
    failed: list[tuple[RolloutStep, str]] = []
    still: list[RolloutStep] = []
    for s in updating:
        instance = s.instance
        if instance is None:
            failed.append((s, "it was deleted during the rollout"))
            continue
        instance.refresh_from_db()
        if instance.status == Instance.Status.ERROR:
            failed.append((s, instance.status_message))
            continue
        finished = (instance.status == Instance.Status.RUNNING
                    and instance.recreate_done >= instance.recreate_requested
                    and (not rollout.digest or instance.running_digest == rollout.digest))
        if finished:
            RolloutStep.objects.filter(pk=s.pk).update(state=RolloutStep.State.DONE,
                                                       message="Runs the new digest.")
        else:
            still.append(s)
    if failed:
        for s, why in failed:
            RolloutStep.objects.filter(pk=s.pk).update(state=RolloutStep.State.FAILED,
                                                       message=why)
        first, why = failed[0]
        text = (f"Stopped at batch {batch + 1}: {first.instance_name} failed: {why} The batches "
                "after it were not touched.")
        if not still:
            return _fail(rollout, text)
        # The rest of the batch is being recreated already: let it finish, so the page says
        # truly what each instance runs, then stop.
        rollout.message = text.replace("Stopped at", "Stopping at", 1)
        rollout.save(update_fields=["message"])
    waited = (timezone.now() - (rollout.batch_started_at or timezone.now())).total_seconds()
    if still and waited > settings.CLAWORC_CREATING_TIMEOUT:
        late = ", ".join(s.instance_name for s in still)
        return _fail(rollout, f"Stopped at batch {batch + 1}: {late} did not run the new image "
                              f"within {settings.CLAWORC_CREATING_TIMEOUT} s "
                              "(CLAWORC_CREATING_TIMEOUT).")
    _enqueue_advance(rollout.pk, countdown=POLL_SECONDS)
    return "updating"


def rollouts_active() -> list[int]:
    return list(Rollout.objects.filter(state__in=Rollout.ACTIVE).values_list("pk", flat=True))

