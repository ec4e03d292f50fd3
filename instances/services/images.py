"""Image pulls: one pull per image at a time, as its own long task, with progress.

  converge finds the image missing → image_pull_request (web or worker side): one ImagePull row
                                      per image; a task is enqueued unless a pull is alive
  pull_image(image) task            → image_pull: lease on the image, orch.pull() with progress
                                      written to the row and to the waiting instances' status
  done                              → every instance waiting in `pulling` is reconciled
  failed                            → every instance waiting goes to `error` with the cause

A pull is bounded by CLAWORC_PULL_TIMEOUT, not by the per-instance task limit. A worker that
dies mid-pull leaves the download going (the Docker backend's pull keeper) and a row whose
heartbeat grows old: reconcile_all requests the pull again, which joins that download.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from orchestrators.base import PullError, PullProgress, RegistryAuth, TransientError, registry_of

from .. import keys
from ..models import Activity, ImagePull, Instance, Setting, format_bytes

logger = logging.getLogger(__name__)

#: A pull not heard of for this long (no progress written) died with its worker.
PULL_STALE = timedelta(seconds=120)
#: Progress is written at most this often (seconds): the pages refresh slower than that.
PROGRESS_EVERY = 1.0
REGISTRY_AUTH_PREFIX = "registry_auth:"


# --- registry credentials (an encrypted Setting per registry host) -------------------------------

@sensitive_variables("password", "blob")
def registry_auth_set(*, registry: str, username: str, password: str) -> None:
    """Store credentials for pulls from `registry` (e.g. "ghcr.io"), encrypted at rest."""
    registry = registry.strip().lower()
    if not registry or "/" in registry or not username:
        raise ValueError("Give a registry host (like ghcr.io or 127.0.0.1:5000) and a username.")
    blob = json.dumps({"username": username, "password": password})
    Setting.set(REGISTRY_AUTH_PREFIX + registry, keys.encrypt(blob))
    logger.info("registry credentials set for %s (user %s)", registry, username)


def registry_auth_clear(*, registry: str) -> bool:
    deleted, _ = Setting.objects.filter(key=REGISTRY_AUTH_PREFIX + registry.strip().lower()
                                        ).delete()
    return bool(deleted)


@sensitive_variables("blob", "data")
def registry_auth_for(image: str) -> RegistryAuth | None:
    """The stored credentials for `image`'s registry, or None."""
    token = Setting.get_str(REGISTRY_AUTH_PREFIX + registry_of(image).lower())
    if not token:
        return None
    blob = keys.decrypt(token, where=f"The stored credentials for {registry_of(image)}")
    data = json.loads(blob)
    return RegistryAuth(username=data["username"], password=data["password"])


def registries_with_auth() -> list[str]:
    return sorted(k.removeprefix(REGISTRY_AUTH_PREFIX) for k in Setting.objects.filter(
        key__startswith=REGISTRY_AUTH_PREFIX).values_list("key", flat=True))


# --- requesting a pull (deduplicated) -------------------------------------------------------------

def pull_is_alive(pull: ImagePull, now=None) -> bool:
    """Queued or pulling, and heard of recently: the pull to wait for, not to start again."""
    now = now or timezone.now()
    if pull.state == ImagePull.State.QUEUED:
        return pull.requested_at > now - PULL_STALE
    if pull.state == ImagePull.State.PULLING:
        return (pull.heartbeat_at or pull.requested_at) > now - PULL_STALE
    return False


def image_pull_request(*, image: str) -> tuple[ImagePull, bool]:
    """Make sure `image` is being pulled; (its row, whether this call queued a new pull).

    However many instances wait for the image, one pull runs: a live pull is joined.
    """
    from ..tasks import pull_image

    with transaction.atomic():
        pull, created = ImagePull.objects.select_for_update().get_or_create(image=image)
        if not created and pull_is_alive(pull):
            return pull, False
        ImagePull.objects.filter(pk=pull.pk).update(
            state=ImagePull.State.QUEUED, requested_at=timezone.now(), started_at=None,
            finished_at=None, heartbeat_at=None, bytes_done=0, bytes_total=0, layers_done=0,
            layers_total=0, phase="", cause="", message="",
        )
        pull_image.delay_on_commit(image)
    pull.refresh_from_db()
    logger.info("pull of %s queued", image)
    return pull, True


def waiting_instances(image: str):
    """Instances in `pulling` whose image is `image` (an empty image means the default)."""
    own = Q(image=image)
    if image == settings.CLAWORC_AGENT_IMAGE:
        own |= Q(image="")
    return Instance.objects.filter(own, status=Instance.Status.PULLING)


def pulling_message(image: str, pull: ImagePull | None, *, has_workload: bool) -> str:
    """ "Pulling image 30% (12.0 MB of 40.0 MB, 2 of 5 layers): <image>. The current…" """
    keeps = ("The current container keeps running until it is here." if has_workload
             else "The container is created once it is here.")
    progress = f" {pull.progress_text()}" if pull is not None and pull.layers_total else ""
    return f"Pulling image{progress}: {image}. {keeps}"


# --- carrying out a pull (worker side) ------------------------------------------------------------

def pull_lease_name(image: str) -> str:
    # InstanceLease names are at most 64 characters and never DNS labels here ('*').
    return "*pull*" + hashlib.sha256(image.encode()).hexdigest()[:40]


def image_pull(*, image: str, owner: str, last_attempt: bool = True) -> str:
    """Pull `image` (the pull_image task). "busy" when another worker is pulling it."""
    from celery.exceptions import SoftTimeLimitExceeded

    from orchestrators.registry import get_orchestrator

    from .leases import lease_acquire, lease_release

    lease = pull_lease_name(image)
    if not lease_acquire(name=lease, owner=owner, ttl=PULL_STALE):
        logger.info("pull of %s already running elsewhere", image)
        return "busy"
    try:
        now = timezone.now()
        ImagePull.objects.update_or_create(image=image, defaults={
            "state": ImagePull.State.PULLING, "started_at": now, "heartbeat_at": now,
            "finished_at": None, "cause": "", "message": ""})
        ImagePull.objects.filter(image=image).update(attempts=F("attempts") + 1)
        writer = _ProgressWriter(image, lease, owner)
        try:
            orch = get_orchestrator()
            digest = orch.pull(image, auth=registry_auth_for(image), on_progress=writer)
        except SoftTimeLimitExceeded:
            error = PullError(
                f"Could not pull {image}: it did not finish within CLAWORC_PULL_TIMEOUT="
                f"{settings.CLAWORC_PULL_TIMEOUT} s. What the Docker host downloaded is kept: "
                "raise CLAWORC_PULL_TIMEOUT or retry (recreate the instance) to continue.",
                cause="timeout")
            return _pull_failed(image, error, writer.last)
        except PullError as exc:
            return _pull_failed(image, exc, writer.last)
        except TransientError as exc:
            if not last_attempt:
                ImagePull.objects.filter(image=image).update(
                    state=ImagePull.State.QUEUED, requested_at=timezone.now(),
                    message=f"{exc} Retrying.")
                raise
            return _pull_failed(image, PullError(f"Could not pull {image}: {exc}",
                                                 cause="unreachable"), writer.last)
        return _pull_done(image, digest, writer.last)
    finally:
        lease_release(name=lease, owner=owner)


class _ProgressWriter:
    """on_progress for orch.pull(): writes the row and the waiting instances' message, at most
    every PROGRESS_EVERY seconds, and keeps the pull's lease alive while it progresses."""

    def __init__(self, image: str, lease: str, owner: str):
        self.image, self.lease, self.owner = image, lease, owner
        self.last = PullProgress()
        self._written = 0.0

    def __call__(self, progress: PullProgress) -> None:
        from .leases import lease_acquire

        self.last = progress
        if time.monotonic() - self._written < PROGRESS_EVERY:
            return
        self._written = time.monotonic()
        now = timezone.now()
        ImagePull.objects.filter(image=self.image).update(
            bytes_done=progress.bytes_done, bytes_total=progress.bytes_total,
            layers_done=progress.layers_done, layers_total=progress.layers_total,
            phase=progress.phase[:64], heartbeat_at=now)
        lease_acquire(name=self.lease, owner=self.owner, ttl=PULL_STALE)
        pull = ImagePull.objects.filter(image=self.image).first()
        for has_workload in (True, False):
            # One statement per wording; an instance's own "has a container" is the message's
            # last words, kept as they were.
            keeps = ("keeps running" if has_workload else "is created once")
            waiting_instances(self.image).filter(status_message__contains=keeps).update(
                status_message=pulling_message(self.image, pull, has_workload=has_workload),
                status_observed_at=now)


def _pull_done(image: str, digest: str, last: PullProgress) -> str:
    from .intents import _enqueue

    now = timezone.now()
    ImagePull.objects.filter(image=image).update(
        state=ImagePull.State.DONE, digest=digest, finished_at=now, heartbeat_at=now,
        bytes_done=last.bytes_total or last.bytes_done, bytes_total=last.bytes_total,
        layers_done=last.layers_total, layers_total=last.layers_total, phase="Pull complete",
        message=f"Pulled {format_bytes(last.bytes_total)}." if last.bytes_total else "Pulled.")
    with transaction.atomic():
        waiting = list(waiting_instances(image).values_list("pk", "name"))
        Activity.objects.bulk_create(
            Activity(instance_id=pk, instance_name=name, action="pull", actor="system",
                     result=Activity.Result.OK, message=f"Pulled {image}; replacing the workload.")
            for pk, name in waiting)
        for pk, name in waiting:
            _enqueue("reconcile_instance", pk, name)
        _rollouts_advance(image)
    logger.info("pulled %s (%s); %d instance(s) were waiting", image, digest or "no digest",
                len(waiting))
    return "done"


def _pull_failed(image: str, error: PullError, last: PullProgress) -> str:
    from .converge import _status_write

    text = str(error)
    ImagePull.objects.filter(image=image).update(
        state=ImagePull.State.ERROR, cause=error.cause, message=text,
        finished_at=timezone.now(), bytes_done=last.bytes_done, bytes_total=last.bytes_total,
        layers_done=last.layers_done, layers_total=last.layers_total)
    with transaction.atomic():
        waiting = list(waiting_instances(image).values_list("pk", "name"))
        for pk, _name in waiting:
            _status_write(pk=pk, status=Instance.Status.ERROR, message=text)
        # Refused like a backend refusal: carried out (nothing more to retry), shown until a
        # later converge succeeds.
        Instance.objects.filter(pk__in=[pk for pk, _ in waiting]).update(
            observed_generation=F("generation"), restart_done=F("restart_requested"),
            recreate_done=F("recreate_requested"), converge_failed=True, owed_since=None)
        Activity.objects.bulk_create(
            Activity(instance_id=pk, instance_name=name, action="pull", actor="system",
                     result=Activity.Result.ERROR, message=text) for pk, name in waiting)
        _rollouts_advance(image)
    logger.error("pull of %s failed (%s): %s", image, error.cause, text)
    return "error"


def _rollouts_advance(image: str) -> None:
    """Fleet updates waiting for this pull go on (or stop, when it failed)."""
    from .rollouts import _enqueue_advance, rollouts_waiting_for

    for rollout_id in rollouts_waiting_for(image):
        _enqueue_advance(rollout_id)
