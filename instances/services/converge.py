"""Worker side: carry out one instance's intent (converge, observe, tear down).

Each function holds the instance's lease while it talks to the backend and writes what it saw.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from orchestrators.base import (
    FinalError,
    InstanceSpec,
    Observed,
    Orchestrator,
    PortConflict,
    TransientError,
)
from orchestrators.base import Status as ObservedStatus

from ..models import Activity, Instance, OrphanWorkload
from .audit import SYSTEM, activity_record
from .leases import instance_lease, lease_acquire, lease_release

logger = logging.getLogger(__name__)

# --- Worker side: converge one instance ---------------------------------------------------------

# What a person should look at, per backend; data rather than `if backend == ...` branches.
_LOG_HINTS = {
    "docker": "Check `docker logs {name}` for errors.",
    "kubernetes": "Check `kubectl logs deployment/{name}` for errors.",
}


def troubleshooting_message(*, orch: Orchestrator | None, name: str, error: str,
                            workload_exists: bool = True) -> str:
    """`error` followed by the hints of the Docker backend spec's Troubleshooting section that the
    backend's own message does not already give; the logs hint only when there is a workload."""
    low = error.lower()
    hints = []
    if ("privileged" in low or "unable to apply caps" in low) and (
            "CLAWORC_DOCKER_PRIVILEGED" not in error and "--privileged mode" not in error):
        hints.append(
            "The agent image requires --privileged mode: make sure the Docker host allows "
            "privileged containers (Docker Desktop must not disable them); on hosts that refuse "
            "them set CLAWORC_DOCKER_PRIVILEGED=false."
        )
    if ("port" in low and any(w in low for w in ("in use", "already allocated", "address already"))
            and "CLAWORC_PORT_START" not in error):
        hints.append(
            "A port is already in use: Claworc allocates ports from CLAWORC_PORT_START to "
            f"CLAWORC_PORT_END ({settings.CLAWORC_PORT_START}–{settings.CLAWORC_PORT_END}); "
            "ensure this range is free, then restart the instance."
        )
    log_hint = _LOG_HINTS.get(getattr(orch, "backend_name", ""), "").format(name=name)
    if workload_exists and log_hint and log_hint.split("`")[1] not in error:
        hints.append(log_hint)
    return " ".join([error.strip(), *hints])


def _status_write(*, pk: int, status: str, message: str, now: datetime | None = None) -> None:
    now = now or timezone.now()
    Instance.objects.filter(pk=pk).update(
        status=status, status_message=message, status_observed_at=now,
        status_since=Case(When(~Q(status=status), then=now), default=F("status_since")),
    )


def _observed_fields(observed: Observed) -> tuple[str, str]:
    """Status and a stable message: a backend's "Up 3 minutes" would change at every look."""
    status, message = _observed_base_fields(observed)
    notes = " ".join(n for n in observed.notes if n not in message)
    return status, " ".join(part for part in (message, notes) if part)


def _observed_base_fields(observed: Observed) -> tuple[str, str]:
    code = observed.exit_code
    if observed.status == ObservedStatus.RUNNING:
        return str(observed.status), ""
    if observed.status == ObservedStatus.STOPPED:
        if not observed.exists:
            return str(observed.status), "No workload exists."
        return str(observed.status), "Stopped." if code is None else f"Stopped (exit code {code})."
    if observed.status == ObservedStatus.CREATING:
        return str(observed.status), (
            "Starting." if code is None else f"Restarting after exit code {code}.")
    return str(observed.status), observed.message


def _workload_exists(orch: Orchestrator | None, name: str) -> bool:
    """Whether the backend has a workload called `name` (for hints that name its logs)."""
    if orch is None:
        return False
    try:
        return orch.status(name).exists
    except Exception:  # noqa: BLE001 - only decides whether a hint is worth giving
        return False


class WorkerLost(Exception):
    """The converges of this instance keep killing their worker (out of memory, a crash)."""


def instance_converge(*, pk: int, owner: str, last_attempt: bool = True) -> str:
    """Carry out what instance `pk` owes: converge it to its desired state with the smallest
    change, or, when it is `deleting`, tear it down and remove the row.

    Returns what happened in a few words. LeaseBusy and TransientError propagate for the task to
    retry, except on the last attempt, when the transient error is recorded and reconcile_all
    keeps trying.
    """
    name = Instance.objects.filter(pk=pk).values_list("name", flat=True).first()
    if name is None:
        return "gone"
    with instance_lease(name=name, owner=owner):
        # Started: reconcile_all need not send it again. A converge that never gets to the
        # `finally` below (its worker was killed) leaves the count up: capped, it becomes `error`.
        Instance.objects.filter(pk=pk).update(enqueued_at=None,
                                              worker_losses=F("worker_losses") + 1)
        instance = Instance.objects.filter(pk=pk).first()
        if instance is None:
            return "gone"
        try:
            if instance.worker_losses > settings.CLAWORC_MAX_WORKER_LOSSES:
                return _worker_lost_too_often(instance)
            if instance.status == Instance.Status.DELETING:
                return _teardown_locked(instance, last_attempt=last_attempt)
            return _converge_locked(instance, last_attempt=last_attempt)
        finally:
            Instance.objects.filter(pk=pk).update(worker_losses=0)


def _worker_lost_too_often(instance: Instance) -> str:
    losses = instance.worker_losses - 1
    text = (f"The worker carrying out this instance's last {losses} converges died before "
            "finishing (killed, or out of memory): Claworc stopped retrying. Check the worker's "
            "memory and logs, then start, restart or recreate the instance.")
    _done_with(instance, failed=True, status=Instance.Status.ERROR, message=text)
    activity_record(instance_id=instance.pk, instance_name=instance.name, action="reconcile",
                    result=Activity.Result.ERROR, actor=SYSTEM, message=text)
    logger.error("converge of %s abandoned: %s", instance.name, text)
    return "error"


def _done_with(instance: Instance, *, failed: bool, status: str, message: str) -> bool:
    """Record that the generation and one-shot requests read at the start were carried out (or
    refused), and write the status unless a newer intent arrived meanwhile (its own converge
    writes then; its transitional status stays). True when the status was written."""
    now = timezone.now()
    with transaction.atomic():
        Instance.objects.filter(pk=instance.pk).update(
            observed_generation=Greatest(F("observed_generation"), Value(instance.generation)),
            restart_done=Greatest(F("restart_done"), Value(instance.restart_requested)),
            recreate_done=Greatest(F("recreate_done"), Value(instance.recreate_requested)),
            converge_failed=failed,
        )
        return bool(Instance.objects.filter(
            pk=instance.pk, generation=instance.generation,
            restart_requested=instance.restart_requested,
            recreate_requested=instance.recreate_requested,
        ).update(
            status=status, status_message=message, status_observed_at=now, owed_since=None,
            status_since=Case(When(~Q(status=status), then=now), default=F("status_since")),
        ))


def _converge_locked(instance: Instance, *, last_attempt: bool) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    from orchestrators.registry import get_orchestrator

    from ..specs import instance_spec

    # Every one-shot request made so far is carried out once: a recreate covers a restart.
    recreate = instance.recreate_requested > instance.recreate_done
    restart = not recreate and instance.restart_requested > instance.restart_done
    orch = None
    digest = None  # of the image the workload runs, when the host pulls (one inspect for both)
    try:
        orch = get_orchestrator()
        if instance.desired_state == Instance.DesiredState.RUNNING:
            spec = instance_spec(instance, privileged=orch.privileged)
            if orch.pulls_images and (digest := orch.local_image(spec.image)) is None:
                # Pull first, replace second: the workload is left as it is (running) until
                # the image is on the host; the pull's own task reconciles us again then.
                return _wait_for_image(instance, orch, spec.image)
            observed = _run_moving_ports(instance, orch, spec, recreate=recreate,
                                         restart=restart)
        else:
            observed = orch.stop(instance.name)
    except SoftTimeLimitExceeded:
        error = TransientError(
            f"Timed out after {settings.CLAWORC_TASK_TIME_LIMIT} s waiting for the orchestrator."
        )
        return _converge_failed(instance, orch, error, last_attempt=last_attempt)
    except (FinalError, TransientError) as exc:
        return _converge_failed(instance, orch, exc, last_attempt=last_attempt)

    status, message = _observed_fields(observed)
    if instance.desired_state == Instance.DesiredState.STOPPED and not observed.exists:
        message = "No workload exists: it is made when the instance is started."
    _done_with(instance, failed=False, status=status, message=message)
    if digest is not None and digest != instance.running_digest:
        # For "update available": what the host held under the spec's image name when ensure()
        # ran (one inspect before it, as no pull happens in between).
        Instance.objects.filter(pk=instance.pk).update(running_digest=digest)
    what = ("recreate" if recreate else "restart" if restart
            else "ensure" if instance.desired_state == "running" else "stop")
    activity_record(
        instance_id=instance.pk, instance_name=instance.name, action=what,
        result=Activity.Result.OK, actor=SYSTEM,
        message=f"Now {status}." + (f" {message}" if message else ""),
    )
    logger.info("reconciled %s: %s, now %s", instance.name, what, status)
    return status


def _run_moving_ports(instance: Instance, orch: Orchestrator, spec: InstanceSpec, *,
                      recreate: bool, restart: bool) -> Observed:
    """ensure() (then restart()) or recreate(); a pair taken outside Claworc (PortConflict)
    moves the instance to the next free pair and tries again, MAX_PORT_MOVES times at most."""
    from .ports import MAX_PORT_MOVES, PortRangeFull, ports_move

    avoid: set[int] = set()
    moves = 0
    while True:
        try:
            if recreate:
                return orch.recreate(spec)
            observed = orch.ensure(spec)
            return orch.restart(instance.name) if restart else observed
        except PortConflict as exc:
            avoid.add(exc.port_chrome - exc.port_chrome % 2)
            moves += 1
            if moves > MAX_PORT_MOVES:
                raise FinalError(
                    f"{exc} Claworc moved {instance.name} to another pair {MAX_PORT_MOVES} "
                    "times and each was taken outside Claworc too: free the ports in "
                    "CLAWORC_PORT_START..CLAWORC_PORT_END on the host, then start the "
                    "instance again.") from exc
            try:
                moved = ports_move(instance=instance, avoid=avoid)
            except PortRangeFull as full:
                raise FinalError(f"{exc} {full}") from exc
            text = (f"Ports {exc.port_chrome}/{exc.port_terminal} were taken outside Claworc; "
                    f"moved to {moved.port_chrome}/{moved.port_terminal}.")
            activity_record(instance_id=instance.pk, instance_name=instance.name,
                            action="ports", result=Activity.Result.INFO, actor=SYSTEM,
                            message=text)
            logger.warning("%s: %s", instance.name, text)
            spec = dataclasses.replace(spec, port_chrome=moved.port_chrome,
                                       port_terminal=moved.port_terminal)


def _wait_for_image(instance: Instance, orch: Orchestrator, image: str) -> str:
    from .images import image_pull_request, pulling_message

    pull, queued = image_pull_request(image=image)
    has_workload = orch.status(instance.name).exists
    _status_write(pk=instance.pk, status=Instance.Status.PULLING,
                  message=pulling_message(image, pull, has_workload=has_workload))
    if instance.status != Instance.Status.PULLING:
        activity_record(
            instance_id=instance.pk, instance_name=instance.name, action="pull",
            result=Activity.Result.QUEUED, actor=SYSTEM,
            message=f"{image} is not on the host: " + (
                "pulling it." if queued else "waiting for the pull already under way."))
    logger.info("%s waits for image %s (%s)", instance.name, image,
                "pull queued" if queued else "pull under way")
    return "pulling"


def _converge_failed(instance: Instance, orch, exc: Exception, *, last_attempt: bool) -> str:
    transient = isinstance(exc, TransientError)
    if transient and not last_attempt:
        logger.warning("reconcile of %s failed, will retry: %s", instance.name, exc)
        raise exc
    if transient:
        # Not `error`, and still owed: nothing is wrong with the instance itself, and
        # reconcile_all keeps trying (a transitional status still times out into `error`).
        text = f"{exc} Claworc keeps trying at every periodic reconcile."
        Instance.objects.filter(pk=instance.pk).update(status_message=text)
    else:
        text = troubleshooting_message(orch=orch, name=instance.name, error=str(exc),
                                       workload_exists=_workload_exists(orch, instance.name))
        # Refused: recorded as done (retrying cannot help), and shown until a converge succeeds.
        _done_with(instance, failed=True, status=Instance.Status.ERROR, message=text)
    activity_record(instance_id=instance.pk, instance_name=instance.name, action="reconcile",
                    result=Activity.Result.ERROR, actor=SYSTEM, message=text)
    logger.error("reconcile of %s failed: %s", instance.name, text)
    return "error"


def instance_observe(*, pk: int, owner: str, last_attempt: bool = True) -> str:
    """Read one instance's workload state and write it (the admin's "refresh status")."""
    from celery.exceptions import SoftTimeLimitExceeded

    from orchestrators.registry import get_orchestrator

    name = Instance.objects.filter(pk=pk).values_list("name", flat=True).first()
    if name is None:
        return "gone"
    if not lease_acquire(name=name, owner=owner):
        return "busy"  # whoever holds it writes a fresher status when done
    try:
        orch = None
        try:
            orch = get_orchestrator()
            observed = orch.status(name)
        except SoftTimeLimitExceeded:
            exc = TransientError(f"Timed out after {settings.CLAWORC_TASK_TIME_LIMIT} s waiting "
                                 "for the orchestrator.")
            if not last_attempt:
                raise exc from None
            return _observe_failed(pk, name, orch, exc)
        except (FinalError, TransientError) as exc:
            if isinstance(exc, TransientError) and not last_attempt:
                raise
            return _observe_failed(pk, name, orch, exc)
        status, message = _observed_fields(observed)
        row = Instance.objects.filter(pk=pk).values("status", "generation",
                                                    "observed_generation").first()
        # A transitional status belongs to the intent being carried out: its converge writes.
        if row and row["generation"] == row["observed_generation"] and (
                row["status"] not in Instance.TRANSITIONAL):
            _status_write(pk=pk, status=status, message=message)
        activity_record(instance_id=pk, instance_name=name, action="refresh",
                        result=Activity.Result.OK, actor=SYSTEM, message=f"Observed {status}.")
        return status
    finally:
        lease_release(name=name, owner=owner)


def _observe_failed(pk: int, name: str, orch, exc: Exception) -> str:
    text = troubleshooting_message(orch=orch, name=name, error=str(exc), workload_exists=False)
    activity_record(instance_id=pk, instance_name=name, action="refresh",
                    result=Activity.Result.ERROR, actor=SYSTEM, message=text)
    return "error"


def _teardown_locked(instance: Instance, *, last_attempt: bool) -> str:
    """Remove a `deleting` instance's workload and config (and volumes unless kept), then the
    row: only now are its name and port pair free again."""
    from celery.exceptions import SoftTimeLimitExceeded

    from orchestrators.registry import get_orchestrator

    name, purge_volumes = instance.name, not instance.keep_volumes
    orch = None
    try:
        orch = get_orchestrator()
        orch.delete(name, purge_volumes=purge_volumes)
    except (SoftTimeLimitExceeded, FinalError, TransientError) as exc:
        if isinstance(exc, SoftTimeLimitExceeded):
            exc = TransientError(f"Timed out after {settings.CLAWORC_TASK_TIME_LIMIT} s waiting "
                                 "for the orchestrator.")
        if isinstance(exc, TransientError) and not last_attempt:
            raise exc from None
        text = troubleshooting_message(orch=orch, name=name, error=str(exc),
                                       workload_exists=_workload_exists(orch, name))
        # Still `deleting` (name and ports reserved): reconcile_all tries again.
        text += " Claworc tries the deletion again at every periodic reconcile."
        Instance.objects.filter(pk=instance.pk).update(status_message=text)
        activity_record(instance_id=instance.pk, instance_name=name, action="delete",
                        result=Activity.Result.ERROR, actor=SYSTEM, message=text)
        logger.error("teardown of %s failed: %s", name, text)
        return "error"
    with transaction.atomic():
        Instance.objects.filter(pk=instance.pk).purge()  # its port pair goes with it
        OrphanWorkload.objects.filter(name=name).delete()
    done = "Removed the container, config directory" + (
        " and volumes." if purge_volumes else "; the volumes were kept.")
    activity_record(instance_name=name, action="delete", result=Activity.Result.OK,
                    actor=SYSTEM, message=done)
    logger.info("tore down %s (purge_volumes=%s)", name, purge_volumes)
    return "deleted"


def instance_teardown(*, name: str, purge_volumes: bool, owner: str,
                      last_attempt: bool = True) -> str:
    """Remove what is left of an instance called `name` that has no row (a teardown message sent
    before deletions became two-step). A row with this name is not touched: its own converge
    tears it down when it is `deleting`."""
    from orchestrators.registry import get_orchestrator

    with instance_lease(name=name, owner=owner):
        if Instance.objects.filter(name=name).exists():
            return "skipped"
        orch = None
        try:
            orch = get_orchestrator()
            orch.delete(name, purge_volumes=purge_volumes)
        except (FinalError, TransientError) as exc:
            if isinstance(exc, TransientError) and not last_attempt:
                raise
            text = troubleshooting_message(orch=orch, name=name, error=str(exc),
                                           workload_exists=False)
            activity_record(instance_name=name, action="delete", result=Activity.Result.ERROR,
                            actor=SYSTEM, message=text)
            return "error"
    OrphanWorkload.objects.filter(name=name).delete()
    return "deleted"
