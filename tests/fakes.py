"""A small in-memory Orchestrator for unit tests of the control flow (services, tasks, admin).

It keeps the interface's contract (idempotent operations, a missing workload is STOPPED with
exists=False, status_all in one call) and records every call, so tests can assert what the
control flow asked of the backend. The real backends have their own tests on real daemons.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from orchestrators.base import (
    VOLUME_MOUNTS,
    FinalError,
    InstanceSpec,
    Observed,
    Orchestrator,
    Status,
)


@dataclass
class FakeWorkload:
    spec: InstanceSpec
    status: Status = Status.RUNNING
    exit_code: int | None = None
    message: str = ""
    logs: str = ""
    generation: int = 1  # bumped when the workload is replaced (recreate, changed spec)


@dataclass
class FakeOrchestrator(Orchestrator):
    backend_name = "docker"  # so troubleshooting hints name `docker logs`
    privileged: bool = False
    workloads: dict[str, FakeWorkload] = field(default_factory=dict)
    volumes: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    #: operation name -> exception raised (once) by the next call of that operation
    fail_next: dict[str, Exception] = field(default_factory=dict)

    def _call(self, op: str, name: str = "") -> None:
        self.calls.append((op, name))
        exc = self.fail_next.pop(op, None)
        if exc is not None:
            raise exc

    def ops(self, op: str) -> list[str]:
        return [name for o, name in self.calls if o == op]

    def _observed(self, name: str) -> Observed:
        w = self.workloads.get(name)
        if w is None:
            return Observed(name=name, status=Status.STOPPED, exists=False)
        return Observed(name=name, status=w.status, message=w.message, exit_code=w.exit_code,
                        log_tail=w.logs[-200:])

    def desktop_address(self, name: str, container_port: int, node_port: int) -> tuple[str, int]:
        self._call("desktop_address", name)
        return "127.0.0.1", node_port

    def ping(self) -> str:
        self._call("ping")
        return "fake"

    def ensure(self, spec: InstanceSpec) -> Observed:
        self._call("ensure", spec.name)
        w = self.workloads.get(spec.name)
        if w is None:
            self.workloads[spec.name] = FakeWorkload(spec=spec)
        elif w.spec != spec or dict(w.spec.env) != dict(spec.env):
            w.spec, w.generation = spec, w.generation + 1
        w = self.workloads[spec.name]
        w.status, w.exit_code, w.message = Status.RUNNING, None, ""
        self.volumes.update(f"claworc-{spec.name}-{s}"
                            for s in ("clawdbot", "homebrew", "clawd", "chrome"))
        return self._observed(spec.name)

    def start(self, name: str) -> Observed:
        self._call("start", name)
        if name not in self.workloads:
            raise FinalError(f"{name} does not exist; ensure it first")
        self.workloads[name].status = Status.RUNNING
        return self._observed(name)

    def stop(self, name: str) -> Observed:
        self._call("stop", name)
        if name in self.workloads:
            self.workloads[name].status = Status.STOPPED
            self.workloads[name].exit_code = 143
        return self._observed(name)

    def restart(self, name: str) -> Observed:
        self._call("restart", name)
        if name not in self.workloads:
            raise FinalError(f"{name} does not exist; ensure it first")
        self.workloads[name].status = Status.RUNNING
        return self._observed(name)

    def recreate(self, spec: InstanceSpec) -> Observed:
        self._call("recreate", spec.name)
        old = self.workloads.get(spec.name)
        self.workloads[spec.name] = FakeWorkload(
            spec=spec, generation=(old.generation + 1) if old else 1)
        return self._observed(spec.name)

    def delete(self, name: str, *, purge_volumes: bool = False) -> None:
        self._call("delete", name)
        self.workloads.pop(name, None)
        if purge_volumes:
            self.volumes = {v for v in self.volumes if not v.startswith(f"claworc-{name}-")}

    def status(self, name: str) -> Observed:
        self._call("status", name)
        return self._observed(name)

    def status_all(self) -> dict[str, Observed]:
        self._call("status_all")
        return {name: self._observed(name) for name in self.workloads}

    def volumes_all(self) -> dict[str, list[str]]:
        self._call("volumes_all")
        by_instance: dict[str, list[str]] = {}
        for volume in sorted(self.volumes):
            for suffix in VOLUME_MOUNTS:
                if volume.startswith("claworc-") and volume.endswith(f"-{suffix}"):
                    name = volume.removeprefix("claworc-").removesuffix(f"-{suffix}")
                    by_instance.setdefault(name, []).append(volume)
        return by_instance

    def logs(self, name: str, lines: int = 100) -> str:
        self._call("logs", name)
        w = self.workloads.get(name)
        return "\n".join(w.logs.splitlines()[-lines:]) if w else ""


@contextlib.contextmanager
def eager_tasks(*, propagate: bool = True):
    """Run Celery tasks in-process when enqueued (on commit).

    With `propagate`, a task's error reaches the test; without, Celery handles it as a worker
    would (retries run at once, in-process).
    """
    from claworc_site.celery import app

    saved = app.conf.task_always_eager, app.conf.task_eager_propagates
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, propagate
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.task_eager_propagates = saved


@dataclass
class FakePullingOrchestrator(FakeOrchestrator):
    """A fake whose host holds images and pulls them, like Docker (pulls_images)."""

    pulls_images = True
    images: dict[str, str] = field(default_factory=dict)  # image -> digest
    #: image -> what pulling it does: an exception to raise, or a digest to end with
    registry: dict[str, object] = field(default_factory=dict)

    def local_image(self, image: str) -> str | None:
        self._call("local_image", image)
        return self.images.get(image)

    def resolve_digest(self, image, *, auth=None) -> str:
        from orchestrators.base import PullError

        found = self.registry.get(image)
        if found is None or isinstance(found, BaseException):
            raise PullError(f"Could not pull {image}: no such image", cause="not_found")
        return str(found)

    def pull(self, image, *, auth=None, on_progress=None) -> str:
        from orchestrators.base import PullError, PullProgress

        self._call("pull", image)
        found = self.registry.get(image)
        if found is None:
            raise PullError(f"Could not pull {image}: no such image", cause="not_found")
        if isinstance(found, BaseException):
            raise found
        if on_progress is not None:
            on_progress(PullProgress(bytes_done=50, bytes_total=100, layers_done=1,
                                     layers_total=2, phase="Downloading"))
        self.images[image] = str(found)
        return str(found)
