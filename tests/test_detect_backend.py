"""`manage.py detect_backend` against the real Docker daemon, a daemon that is not there, a
forced Setting, and an emulated Kubernetes API server; in-process and as a real process."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from instances.models import Setting
from orchestrators import registry
from tests import kube_support

ROOT = Path(__file__).resolve().parent.parent
NO_DAEMON = "unix:///nonexistent/claworc-t5.sock"

kube_api = kube_support.kube_api
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_cluster")]


def run(*args):
    """(exit status, stdout) of the command run in-process."""
    out = io.StringIO()
    try:
        call_command("detect_backend", *args, stdout=out, no_color=True)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), ""


@pytest.fixture
def server_version(docker_client):
    return docker_client.version()["Version"]


@pytest.mark.docker
def test_auto_with_docker_up_and_no_cluster_chooses_docker(server_version, tmp_path):
    Setting.set(registry.SETTING_KEY, "auto")
    code, out, _ = run()
    lines = out.splitlines()
    assert code == 0
    missing = tmp_path / "no-kubeconfig"
    assert lines[0] == f"kubernetes: no in-cluster config, no kubeconfig at {missing}"
    assert lines[1].startswith(f"docker: ping ok, server {server_version}")
    assert lines[2] == "orchestrator_backend: docker (detected, stored)"
    assert Setting.get_str(registry.SETTING_KEY) == "docker"
    assert registry.get_orchestrator().backend_name == "docker"


def test_docker_host_pointing_at_nothing_is_none_with_the_reason():
    with override_settings(CLAWORC_DOCKER_HOST=NO_DAEMON):
        code, out, error = run()
    assert code == 1
    assert error == "no orchestrator backend is usable"
    lines = out.splitlines()
    assert lines[0].startswith("kubernetes: no in-cluster config")
    assert lines[1].startswith("docker: Docker not available")
    assert "nonexistent" in lines[1] or "No such file" in lines[1]
    assert lines[2] == "orchestrator_backend: none (detected, stored)"
    assert Setting.get_str(registry.SETTING_KEY) == "none"


@pytest.mark.docker
def test_stored_backend_skips_detection(server_version):
    Setting.set(registry.SETTING_KEY, "docker")
    code, out, _ = run()
    assert code == 0
    assert "kubernetes" not in out  # the Kubernetes attempt is skipped, as the spec says
    assert out.splitlines()[0].startswith(f"docker: ping ok, server {server_version}")
    assert "orchestrator_backend: docker (stored in the 'orchestrator_backend' setting; " \
        "detection skipped, --redetect runs it)" in out


@pytest.mark.docker
def test_stored_kubernetes_without_a_cluster_fails_without_trying_docker(docker_client):
    Setting.set(registry.SETTING_KEY, "kubernetes")
    code, out, error = run()
    assert code == 1
    assert error == "the stored backend kubernetes is not usable"
    assert out.splitlines()[0].startswith("kubernetes: no in-cluster config, no kubeconfig")
    assert "docker:" not in out
    # --redetect ignores the stored choice and stores what it finds.
    code, out, _ = run("--redetect")
    assert code == 0
    assert "orchestrator_backend: docker (detected, stored)" in out
    assert Setting.get_str(registry.SETTING_KEY) == "docker"


@pytest.mark.docker
def test_set_forces_a_backend_and_auto_detects_again(docker_client):
    code, out, _ = run("--set", "kubernetes")
    assert code == 1
    assert Setting.get_str(registry.SETTING_KEY) == "kubernetes"
    assert "orchestrator_backend: kubernetes (set now with --set)" in out
    code, out, _ = run("--set", "docker")
    assert code == 0
    assert Setting.get_str(registry.SETTING_KEY) == "docker"
    code, out, _ = run("--set", "auto")
    assert code == 0
    assert out.splitlines()[0].startswith("kubernetes: ")
    assert Setting.get_str(registry.SETTING_KEY) == "docker"


def test_set_rejects_unknown_backends():
    with pytest.raises(CommandError, match="invalid choice: 'podman'"):
        call_command("detect_backend", "--set", "podman")


@pytest.mark.docker
def test_json_output(server_version):
    code, out, _ = run("--json")
    assert code == 0
    data = json.loads(out)
    assert data["orchestrator_backend"] == "docker"
    assert data["usable"] is True
    assert data["source"] == "detected"
    assert data["persisted"] is True
    assert [t["backend"] for t in data["tried"]] == ["kubernetes", "docker"]
    assert data["tried"][0]["usable"] is False
    assert f"server {server_version}" in data["tried"][1]["reason"]


def test_kubeconfig_pointing_at_an_api_server_chooses_kubernetes(kube_api, tmp_path,
                                                                  monkeypatch):
    kubeconfig = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # Docker is not even needed: Kubernetes is tried first and wins.
    with override_settings(CLAWORC_DOCKER_HOST=NO_DAEMON):
        code, out, _ = run("--json")
    assert code == 0
    data = json.loads(out)
    assert data["orchestrator_backend"] == "kubernetes"
    assert [t["backend"] for t in data["tried"]] == ["kubernetes"]
    assert data["tried"][0]["reason"] == f"API ok at {kube_api.url}, namespace claworc"
    assert Setting.get_str(registry.SETTING_KEY) == "kubernetes"
    # The probe really reached the emulated server.
    assert any(path.startswith("/api") for _, path, _ in kube_api.requests())


def test_help_explains_every_option():
    done = subprocess.run(
        [sys.executable, "manage.py", "detect_backend", "--help"], cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0
    for option in ("--redetect", "--set {docker,kubernetes,auto}", "--json", "--timeout"):
        assert option in done.stdout
    assert "Exits with status 1 when no backend is usable" in " ".join(done.stdout.split())


@pytest.mark.docker
@pytest.mark.slow
def test_as_a_real_process(tmp_path, docker_client):
    """What `make run` does at start-up: migrate, then detect_backend; both exit codes."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/claworc.sqlite3",
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
        "LOG_LEVEL": "WARNING",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)

    def manage(*args, **extra):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT,
                              env={**env, **extra}, capture_output=True, text=True, timeout=120)

    assert manage("migrate", "--no-input", "-v", "0").returncode == 0
    dead = manage("detect_backend", CLAWORC_DOCKER_HOST=NO_DAEMON)
    assert dead.returncode == 1
    assert "docker: Docker not available" in dead.stdout
    assert "orchestrator_backend: none (detected, stored)" in dead.stdout
    assert "CommandError: no orchestrator backend is usable" in dead.stderr
    assert "Traceback" not in dead.stderr

    alive = manage("detect_backend", "--json")
    assert alive.returncode == 0, alive.stderr
    assert json.loads(alive.stdout)["orchestrator_backend"] == "docker"
    again = manage("detect_backend")
    assert again.returncode == 0
    assert "detection skipped" in again.stdout
