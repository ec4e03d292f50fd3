"""GET /health in each state: Docker up, no backend, database down."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from instances.models import Setting
from orchestrators import registry

ROOT = Path(__file__).resolve().parent.parent
NO_DAEMON = "unix:///nonexistent/claworc-t5.sock"

pytestmark = pytest.mark.usefixtures("no_cluster")


def assert_no_secrets(body: str):
    assert settings.SECRET_KEY not in body
    for key in settings.CLAWORC_ENCRYPTION_KEY.split(","):
        assert key not in body
    assert "Traceback" not in body


@pytest.mark.docker
@pytest.mark.django_db
def test_health_with_docker_up(client, docker_client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = response.json()
    server = docker_client.version()["Version"]
    assert data["status"] == "ok"
    assert data["orchestrator_backend"] == "docker"
    assert data["orchestrator"]["reachable"] is True
    assert f"server {server}" in data["orchestrator"]["detail"]
    assert data["database"]["ok"] is True
    assert data["version"] == "0.1.0"
    assert data["uptime_seconds"] >= 0
    # Detection ran and was persisted, as the spec says.
    assert Setting.get_str(registry.SETTING_KEY) == "docker"
    assert_no_secrets(response.content.decode())


@pytest.mark.django_db
def test_health_with_no_backend(client):
    with override_settings(CLAWORC_DOCKER_HOST=NO_DAEMON):
        response = client.get("/health")
    assert response.status_code == 200  # the database works
    data = response.json()
    assert data["status"] == "degraded"
    assert data["orchestrator_backend"] == "none"
    assert data["orchestrator"]["reachable"] is False
    assert "docker: Docker not available" in data["orchestrator"]["detail"]
    assert data["database"]["ok"] is True
    assert_no_secrets(response.content.decode())


@pytest.mark.django_db
def test_health_with_a_forced_backend_that_is_down(client):
    Setting.set(registry.SETTING_KEY, "docker")
    with override_settings(CLAWORC_DOCKER_HOST=NO_DAEMON):
        data = client.get("/health").json()
    assert data["orchestrator_backend"] == "docker"
    assert data["orchestrator"]["reachable"] is False
    assert data["orchestrator"]["detail"].startswith("Docker not available")
    assert data["status"] == "degraded"


def test_health_with_the_database_down_is_503(tmp_path):
    """A real process whose DATABASE_URL names a file that cannot be opened."""
    script = (
        "import django, json; django.setup()\n"
        "from django.test import Client\n"
        "r = Client().get('/health')\n"
        "print(json.dumps({'code': r.status_code, 'body': r.content.decode()}))\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "claworc_site.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path}/missing-dir/claworc.sqlite3",
        "CLAWORC_DOCKER_HOST": NO_DAEMON,
    }
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 503
    data = json.loads(result["body"])
    assert data["status"] == "error"
    assert data["database"] == {"ok": False, "vendor": "sqlite", "error": "OperationalError"}
    assert data["orchestrator_backend"] == "none"
    assert data["orchestrator"]["reachable"] is False
    assert str(tmp_path) not in result["body"]
    assert_no_secrets(result["body"])


@pytest.fixture
def silent_daemon():
    """A TCP endpoint that accepts connections and never answers: a hung Docker daemon."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.django_db
@pytest.mark.parametrize("stored", ["docker", "auto"])
def test_health_does_not_hang_on_a_daemon_that_never_answers(client, silent_daemon, stored):
    Setting.set(registry.SETTING_KEY, stored)
    started = time.monotonic()
    with override_settings(CLAWORC_DOCKER_HOST=silent_daemon):
        response = client.get("/health")
    elapsed = time.monotonic() - started
    data = response.json()
    assert response.status_code == 200
    assert data["orchestrator"]["reachable"] is False
    assert "did not answer within" in data["orchestrator"]["detail"]
    assert data["orchestrator_backend"] == ("docker" if stored == "docker" else "none")
    # The bound is about 2 s; the margin is for a loaded machine, not a performance figure.
    assert elapsed < 10
