"""compose.yaml says what the seed's `docker run` example says (no image can be pulled here, so
the file is checked, not run)."""

from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def _services():
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_web_worker_beat_and_redis():
    services = _services()
    assert set(services) == {"web", "worker", "beat", "redis"}
    assert {services[s]["command"][0] for s in ("web", "worker", "beat")} == {
        "web", "worker", "beat"
    }
    assert services["web"]["ports"] == ["${CLAWORC_WEB_PORT:-8000}:8000"]


def test_every_dashboard_role_has_the_socket_the_volume_and_the_seed_environment():
    doc = yaml.safe_load(COMPOSE.read_text())
    assert doc["volumes"]["claworc-data"]["name"] == "claworc-data"
    for role in ("web", "worker", "beat"):
        service = doc["services"][role]
        assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"], role
        assert "claworc-data:/app/data" in service["volumes"], role
        env = service["environment"]
        assert env["CLAWORC_NODE_IP"] == "${CLAWORC_NODE_IP:-127.0.0.1}", role
        assert env["CLAWORC_DOCKER_CONFIG_DIR"] == "/app/data/configs", role
        assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0", role
        assert service["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.11-slim}"


def test_worker_and_beat_wait_for_the_migrated_web_and_skip_the_http_check():
    services = _services()
    for role in ("worker", "beat"):
        assert services[role]["depends_on"] == {"web": {"condition": "service_healthy"}}
        assert services[role]["healthcheck"] == {"disable": True}
    assert services["web"]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def _compose_cli() -> list[str] | None:
    import shutil
    import subprocess

    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_compose_validates_the_file_where_a_compose_cli_is_installed():
    import subprocess

    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose / docker-compose here (the file is still checked above)")
    done = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
