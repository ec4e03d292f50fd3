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


@pytest.fixture
def staff_client(client):
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("health-staff", password="pw-health-long",
                                                is_staff=True))
    return client


def _settings_written(fn):
    """Run fn(); the Setting rows it created or changed."""
    before = set(Setting.objects.values_list("key", "value", "updated_at"))
    fn()
    return set(Setting.objects.values_list("key", "value", "updated_at")) - before


@pytest.mark.docker
@pytest.mark.django_db
def test_health_with_docker_up_gives_details_to_staff_only(client, staff_client, docker_client):
    server = docker_client.version()["Version"]
    responses = []
    written = _settings_written(lambda: responses.append(staff_client.get("/health")))
    response = responses[0]
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert data["status"] == "ok"
    assert data["orchestrator_backend"] == "docker"
    assert data["orchestrator"]["reachable"] is True
    assert f"server {server}" in data["orchestrator"]["detail"]
    assert data["database"] == {"ok": True, "vendor": "sqlite"}
    assert data["version"] == "0.1.0"
    assert data["uptime_seconds"] >= 0
    # Detection ran, but a GET stores nothing: `manage.py detect_backend` (make run) does.
    assert written == set()
    assert_no_secrets(response.content.decode())

    staff_client.logout()
    written = _settings_written(lambda: responses.append(client.get("/health")))
    anonymous = responses[1]
    assert anonymous.status_code == 200
    assert anonymous.json() == {"status": "ok", "orchestrator_backend": "docker",
                                "orchestrator": {"reachable": True}, "database": {"ok": True}}
    body = anonymous.content.decode()
    for leak in (server, "0.1.0", "sqlite", "/", "unix:", "tcp:", "127.0.0.1", "API"):
        assert leak not in body, leak
    assert written == set()


@pytest.mark.django_db
def test_anonymous_health_names_no_path_or_address(client, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "secret-place" / "kubeconfig"))
    registry.clear_cache()
    responses = []
    with override_settings(CLAWORC_DOCKER_HOST=NO_DAEMON):
        written = _settings_written(lambda: responses.append(client.get("/health")))
    body = responses[0].content.decode()
    assert responses[0].json()["orchestrator"] == {"reachable": False}
    assert "secret-place" not in body and "nonexistent" not in body and "unix:" not in body
    # Detection found nothing; a GET stores neither that nor anything else.
    assert written == set()
    assert not Setting.objects.filter(key=registry.SETTING_KEY).exists()


@pytest.mark.django_db
def test_health_with_no_backend(staff_client):
    with override_settings(CLAWORC_DOCKER_HOST=NO_DAEMON):
        response = staff_client.get("/health")
    assert response.status_code == 200  # the database works
    data = response.json()
    assert data["status"] == "degraded"
    assert data["orchestrator_backend"] == "none"
    assert data["orchestrator"]["reachable"] is False
    assert "docker: Docker not available" in data["orchestrator"]["detail"]
    assert data["database"]["ok"] is True
    assert_no_secrets(response.content.decode())


@pytest.mark.django_db
def test_health_with_a_forced_backend_that_is_down(staff_client):
    Setting.set(registry.SETTING_KEY, "docker")
    with override_settings(CLAWORC_DOCKER_HOST=NO_DAEMON):
        data = staff_client.get("/health").json()
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
    assert data == {"status": "error", "orchestrator_backend": "none",
                    "orchestrator": {"reachable": False}, "database": {"ok": False}}
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
def test_health_does_not_hang_on_a_daemon_that_never_answers(staff_client, silent_daemon,
                                                             stored):
    Setting.set(registry.SETTING_KEY, stored)
    started = time.monotonic()
    with override_settings(CLAWORC_DOCKER_HOST=silent_daemon):
        response = staff_client.get("/health")
    elapsed = time.monotonic() - started
    data = response.json()
    assert response.status_code == 200
    assert data["orchestrator"]["reachable"] is False
    assert "did not answer within" in data["orchestrator"]["detail"]
    assert data["orchestrator_backend"] == ("docker" if stored == "docker" else "none")
    # The bound is about 2 s; the margin is for a loaded machine, not a performance figure.
    assert elapsed < 10
