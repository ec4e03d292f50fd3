"""Shared fixtures; the test environment itself is set by tests/testenv.py."""

import os
import shutil
import subprocess

import pytest

from tests.testenv import DATA_DIR

REQUIRE_SERVICES = os.environ.get("CLAWORC_REQUIRE_SERVICES", "").lower() in {"1", "true", "yes"}


def need_service(what: str, available: bool, why: str = "") -> None:
    """Skip when a service is missing locally; fail in CI, where .ci/run must have started it."""
    if available:
        return
    message = f"{what} is not available{': ' + why if why else ''}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (CI requires it: scripts/services.sh starts it)", pytrace=False)
    pytest.skip(message)


def _run_ok(*cmd: str) -> bool:
    if not shutil.which(cmd[0]):
        return False
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def postgres_url():
    need_service("PostgreSQL", _run_ok("pg_isready", "-h", "127.0.0.1", "-q"))
    return "postgres://claworc:claworc@127.0.0.1:5432/"


@pytest.fixture(scope="session")
def redis_url():
    need_service("Redis", _run_ok("redis-cli", "-h", "127.0.0.1", "ping"))
    return "redis://127.0.0.1:6379/"


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no daemon here"
        need_service("Docker daemon", False, str(exc))
    return client


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def agent_image(docker_client):
    """Tag of the locally built stand-in agent image (answers HTTP on 6081 and 6082)."""
    from tests.docker_support import build_agent_image

    need_service("busybox-static", os.path.exists("/bin/busybox"))
    return build_agent_image(docker_client)


NOVNC_AGENT_IMAGE = "claworc-novnc-agent:bookworm-2"


@pytest.fixture(scope="session")
def novnc_agent_image(docker_client):
    """The stand-in agent that really serves noVNC (Xvfb, x11vnc, websockify) on 6081/6082.

    scripts/test.sh builds it before the suite (minutes, once per machine); built here too when
    a run starts without it and this machine can (root, debootstrap).
    """
    import docker.errors

    try:
        docker_client.images.get(NOVNC_AGENT_IMAGE)
        return NOVNC_AGENT_IMAGE
    except docker.errors.ImageNotFound:
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        done = subprocess.run(["bash", "scripts/build-novnc-agent-image.sh", NOVNC_AGENT_IMAGE],
                              cwd=root, capture_output=True, text=True, timeout=1200)
        built, why = done.returncode == 0, done.stderr[-2000:]
    except (OSError, subprocess.TimeoutExpired) as exc:
        built, why = False, str(exc)
    need_service("the noVNC stand-in agent image", built,
                 f"scripts/build-novnc-agent-image.sh failed: {why}")
    return NOVNC_AGENT_IMAGE


@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    """No in-cluster config and no kubeconfig, so Kubernetes detection fails as on a laptop."""
    from orchestrators import registry

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.fixture
def test_registry(docker_client, agent_image):
    """A throttled registry on 127.0.0.1 (tests/registry_support.py); images pulled from it
    are removed from the daemon afterwards (only those: the daemon is shared)."""
    from tests.registry_support import TestRegistry, remove_image

    registry = TestRegistry().start()
    yield registry
    registry.stop()
    for name, tags in registry.images.items():
        for tag in tags:
            remove_image(docker_client, registry.ref(name, tag))


@pytest.fixture(scope="session")
def served_images(docker_client, agent_image):
    """served_images(payload_bytes) -> a ServedImage the daemon does not hold, made once per
    size and session (a build and export take seconds on a busy machine)."""
    import secrets

    from tests.registry_support import make_served_image

    made = {}

    def get(payload_bytes: int = 200_000, variant: str = ""):
        key = (payload_bytes, variant)
        if key not in made:
            marker = f"{payload_bytes}-{variant or 'a'}-{secrets.token_hex(3)}"
            made[key] = make_served_image(docker_client, agent_image,
                                          payload_bytes=payload_bytes, marker=marker)
        return made[key]

    return get
