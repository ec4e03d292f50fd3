"""The orchestrator contract (orchestrators/base.py): the same tests on every backend.

Each backend comes with a small harness: the orchestrator, a spec factory, `settle(name)` that
waits until the backend has done what a real one does after a call (Kubernetes: the emulated
cluster's controller makes or replaces the Pods; Docker: the container answers on its port), and
a few read-only views of what the backend made (identity of the workload, its incarnation, the
keys it gets, the volumes it holds). Docker runs on the real daemon (marked `docker`),
Kubernetes against the emulated API server.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import requests

from orchestrators.base import FinalError, InstanceSpec, Orchestrator, Resources, Status
from tests.docker_support import port_is_free, remove_instance_objects
from tests.kube_support import KubeEmulator

PREFIX = "bot-t6-"
DOCKER_PORTS = range(31200, 31300, 2)
SETTLE_TIMEOUT = 30


@dataclass
class Harness:
    orch: Orchestrator
    #: make_spec(suffix, **changes) -> InstanceSpec, a new name per suffix and test.
    make_spec: Callable[..., InstanceSpec]
    #: Let the backend reach the state its last call asked for (see module docstring).
    settle: Callable[[str], None]
    #: Same value while the workload object is the same (container id, Deployment uid).
    identity: Callable[[str], str]
    #: Changes when the workload's process is replaced (restart, recreate).
    incarnation: Callable[[str], str]
    #: The API keys the workload is given.
    env: Callable[[str], dict[str, str]]
    #: The instance's volumes (PVCs) that exist now.
    volumes: Callable[[str], list[str]]
    specs: dict[str, InstanceSpec] = field(default_factory=dict)


def _spec_factory(specs: dict, image: str, free_ports: Iterator[int]):
    """make_spec(suffix, **changes): a new instance takes the next free pair; asking again for
    the same suffix keeps its ports unless the changes name new ones."""
    token = secrets.token_hex(3)

    def make_spec(suffix: str, **changes) -> InstanceSpec:
        name = f"{PREFIX}{token}-{suffix}"
        if name in specs:
            old = specs[name]
            pair = (changes.pop("port_chrome", old.port_chrome),
                    changes.pop("port_terminal", old.port_terminal))
        else:
            port = next(free_ports)
            pair = (port, port + 1)
        values = {
            "name": name, "image": image, "port_chrome": pair[0], "port_terminal": pair[1],
            "env": {"ANTHROPIC_API_KEY": "sk-ant-contract", "OPENAI_API_KEY": "sk-contract"},
            "config": {"agent": {"model": "claude"}},
            "resources": Resources(cpu_request="250m", cpu_limit="1", memory_request="64Mi",
                                   memory_limit="256Mi"),
            "privileged": False,
        }
        values.update(changes)
        specs[name] = InstanceSpec(**values)
        return specs[name]

    return make_spec


# --- Kubernetes --------------------------------------------------------------------------------

@contextlib.contextmanager
def kubernetes_harness():
    from orchestrators.kubernetes import KubernetesOrchestrator

    with KubeEmulator() as kube:
        orch = KubernetesOrchestrator(api_client=kube.api_client(), namespace=kube.namespace,
                                      privileged=False, timeout=5)
        specs: dict[str, InstanceSpec] = {}
        make_spec = _spec_factory(specs, "agent:contract", iter(range(30100, 30200, 2)))

        def identity(name: str) -> str:
            return kube.stored("apps/v1/deployments", name)["metadata"]["uid"]

        def incarnation(name: str) -> str:
            pods = kube.controller.pods(name)
            return ",".join(sorted(p["metadata"]["uid"] for p in pods))

        def env(name: str) -> dict[str, str]:
            data = kube.stored("v1/secrets", f"{name}-keys")["data"]
            return {k: base64.b64decode(v).decode() for k, v in data.items()}

        def volumes(name: str) -> list[str]:
            names = [f"{name}-{v}" for v in ("clawdbot", "homebrew", "clawd", "chrome")]
            return [n for n in names if kube.stored("v1/persistentvolumeclaims", n)]

        yield Harness(orch=orch, make_spec=make_spec, settle=kube.controller.settle,
                      identity=identity, incarnation=incarnation, env=env, volumes=volumes,
                      specs=specs)


# --- Docker ------------------------------------------------------------------------------------

@contextlib.contextmanager
def docker_harness(docker_client, agent_image, config_dir):
    import docker.errors

    from orchestrators.docker import DockerOrchestrator, volume_names

    orch = DockerOrchestrator(config_dir=str(config_dir), privileged=False, init=True,
                              timeout=30)
    specs: dict[str, InstanceSpec] = {}
    make_spec = _spec_factory(
        specs, agent_image, (p for p in DOCKER_PORTS if port_is_free(p) and port_is_free(p + 1)))

    def settle(name: str) -> None:
        """Wait until a running container answers on its Chrome port (stopped: nothing)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            observed = orch.status(name)
            if observed.status in (Status.STOPPED, Status.ERROR):
                return
            if observed.status is Status.RUNNING:
                with contextlib.suppress(requests.RequestException):
                    url = f"http://127.0.0.1:{specs[name].port_chrome}/"
                    if requests.get(url, timeout=1).ok:
                        return
            time.sleep(0.1)
        raise AssertionError(f"{name} did not settle within {SETTLE_TIMEOUT} s")

    def inspect(name: str) -> dict:
        return docker_client.api.inspect_container(name)

    def env(name: str) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in inspect(name)["Config"]["Env"])
        return {k: v for k, v in pairs if k.endswith("_API_KEY")}

    def volumes(name: str) -> list[str]:
        found = []
        for volume in volume_names(name).values():
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.api.inspect_volume(volume)
                found.append(volume)
        return found

    try:
        yield Harness(orch=orch, make_spec=make_spec, settle=settle,
                      identity=lambda name: inspect(name)["Id"],
                      incarnation=lambda name: inspect(name)["State"]["StartedAt"],
                      env=env, volumes=volumes, specs=specs)
    finally:
        for name in specs:
            assert name.startswith(PREFIX), name
            remove_instance_objects(docker_client, name, config_dir)


@pytest.fixture(params=[pytest.param("docker", marks=pytest.mark.docker), "kubernetes"])
def backend(request, tmp_path):
    if request.param == "kubernetes":
        with kubernetes_harness() as harness:
            yield harness
        return
    docker_client = request.getfixturevalue("docker_client")
    agent_image = request.getfixturevalue("agent_image")
    with docker_harness(docker_client, agent_image, tmp_path / "configs") as harness:
        yield harness


# --- the contract ------------------------------------------------------------------------------

def running(backend: Harness, suffix: str, **changes) -> InstanceSpec:
    spec = backend.make_spec(suffix, **changes)
    backend.orch.ensure(spec)
    backend.settle(spec.name)
    return spec


def test_ensure_then_running(backend):
    spec = running(backend, "run")
    observed = backend.orch.status(spec.name)
    assert (observed.name, observed.status, observed.exists) == (spec.name, Status.RUNNING, True)
    assert len(backend.volumes(spec.name)) == 4
    assert backend.env(spec.name) == dict(spec.env)


def test_ensure_twice_is_idempotent(backend):
    spec = running(backend, "twice")
    identity, incarnation = backend.identity(spec.name), backend.incarnation(spec.name)
    observed = backend.orch.ensure(spec)
    backend.settle(spec.name)
    assert observed.status is Status.RUNNING
    assert backend.identity(spec.name) == identity
    assert backend.incarnation(spec.name) == incarnation
    assert backend.orch.status(spec.name).status is Status.RUNNING


def test_stop_then_start(backend):
    spec = running(backend, "stop")
    assert backend.orch.stop(spec.name).status is Status.STOPPED
    backend.settle(spec.name)
    observed = backend.orch.status(spec.name)
    assert (observed.status, observed.exists) == (Status.STOPPED, True)
    assert backend.orch.stop(spec.name).status is Status.STOPPED  # already stopped: success

    backend.orch.start(spec.name)
    backend.settle(spec.name)
    assert backend.orch.status(spec.name).status is Status.RUNNING


def test_restart_replaces_the_process(backend):
    spec = running(backend, "restart")
    before = backend.incarnation(spec.name)
    backend.orch.restart(spec.name)
    backend.settle(spec.name)
    assert backend.incarnation(spec.name) != before
    assert backend.orch.status(spec.name).status is Status.RUNNING


def test_restart_starts_a_stopped_instance(backend):
    spec = running(backend, "restart-stopped")
    backend.orch.stop(spec.name)
    backend.settle(spec.name)
    backend.orch.restart(spec.name)
    backend.settle(spec.name)
    assert backend.orch.status(spec.name).status is Status.RUNNING


def test_status_all_agrees_with_status(backend):
    up = running(backend, "all-up")
    down = running(backend, "all-down")
    backend.orch.stop(down.name)
    backend.settle(down.name)
    everything = backend.orch.status_all()
    for name, expected in ((up.name, Status.RUNNING), (down.name, Status.STOPPED)):
        assert everything[name].status is expected
        assert everything[name].status is backend.orch.status(name).status


def test_recreate_with_new_env(backend):
    spec = running(backend, "recreate")
    before = backend.incarnation(spec.name)
    changed = backend.make_spec("recreate", env={"ANTHROPIC_API_KEY": "sk-ant-rotated"},
                                config={"agent": {"model": "other"}})
    backend.orch.recreate(changed)
    backend.settle(spec.name)
    assert backend.env(spec.name) == {"ANTHROPIC_API_KEY": "sk-ant-rotated"}
    assert backend.incarnation(spec.name) != before
    assert backend.orch.status(spec.name).status is Status.RUNNING
    assert len(backend.volumes(spec.name)) == 4


def test_delete_twice_keeps_volumes_then_status_is_gone(backend):
    spec = running(backend, "delete")
    backend.orch.delete(spec.name)
    backend.orch.delete(spec.name)
    backend.settle(spec.name)
    observed = backend.orch.status(spec.name)
    assert (observed.status, observed.exists) == (Status.STOPPED, False)
    assert spec.name not in backend.orch.status_all()
    assert len(backend.volumes(spec.name)) == 4
    # The kept volumes are listed by instance, as the real backend names them.
    assert backend.orch.volumes_all()[spec.name] == sorted(backend.volumes(spec.name))
    # Ensure again: the same volumes are picked up.
    backend.orch.ensure(spec)
    backend.settle(spec.name)
    assert backend.orch.status(spec.name).status is Status.RUNNING


def test_delete_with_purge_leaves_no_volumes(backend):
    spec = running(backend, "purge")
    backend.orch.delete(spec.name, purge_volumes=True)
    backend.settle(spec.name)
    assert backend.volumes(spec.name) == []
    assert spec.name not in backend.orch.volumes_all()
    backend.orch.delete(spec.name, purge_volumes=True)
    assert backend.orch.status(spec.name).exists is False


def test_missing_instance(backend):
    name = backend.make_spec("never").name
    observed = backend.orch.status(name)
    assert (observed.status, observed.exists) == (Status.STOPPED, False)
    assert backend.orch.stop(name).exists is False
    assert backend.orch.logs(name) == ""
    backend.orch.delete(name, purge_volumes=True)
    with pytest.raises(FinalError):
        backend.orch.start(name)
    with pytest.raises(FinalError):
        backend.orch.restart(name)


def test_logs_are_text(backend):
    spec = running(backend, "logs")
    assert isinstance(backend.orch.logs(spec.name, lines=5), str)
