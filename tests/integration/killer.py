"""A Celery app for crash tests: the real Claworc worker, except that once, at the step named by
CLAWORC_TEST_KILL_AT, it SIGKILLs its whole process group (main process and pool), as a crashed
machine or the OOM killer would. Started as `celery -A tests.integration.killer worker`.

The kill is injected here, around the real code, never from production code paths:

  volumes        after the four volumes were made
  config         after the config file was written
  create         after the container was created (Docker state "created")
  start          after the container was started
  status         before the converge writes the status it observed
  teardown       after the container and config were removed, before the row is
"""

import os
import signal

from celery.signals import worker_process_init

from claworc_site.celery import app  # noqa: F401  the real app, tasks and settings

STEP = os.environ.get("CLAWORC_TEST_KILL_AT", "")
MARKER = os.environ.get("CLAWORC_TEST_KILL_MARKER", "")


def _die(step: str) -> None:
    if step != STEP or not MARKER or os.path.exists(MARKER):
        return
    with open(MARKER, "w") as f:  # once: a worker started later runs normally
        f.write(step)
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _after(owner, attribute: str, step: str) -> None:
    original = getattr(owner, attribute)

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        _die(step)
        return result

    setattr(owner, attribute, wrapped)


def _before(owner, attribute: str, step: str) -> None:
    original = getattr(owner, attribute)

    def wrapped(*args, **kwargs):
        _die(step)
        return original(*args, **kwargs)

    setattr(owner, attribute, wrapped)


@worker_process_init.connect
def _arm(**kwargs):
    # In each pool process, after Django is set up.
    from instances.models import InstanceQuerySet
    from instances.services import converge
    from orchestrators.docker import DockerOrchestrator

    _after(DockerOrchestrator, "_ensure_volumes", "volumes")
    _after(DockerOrchestrator, "_write_config", "config")
    _after(DockerOrchestrator, "_create", "create")
    _after(DockerOrchestrator, "_start_or_remove", "start")
    _before(converge, "_done_with", "status")
    _before(InstanceQuerySet, "purge", "teardown")
