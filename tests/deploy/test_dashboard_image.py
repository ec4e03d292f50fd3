"""The dashboard running as a container, creating bot containers as siblings through the socket.

The last CI stage (`-m deploy`): it builds the image. Names start with bot-t8-, host ports are
33200-33399.
"""

import json
import os
import random
import shutil
import tempfile
import time
import urllib.request
import uuid

import docker.errors
import pytest

from tests.deploy.conftest import DOCKER_SOCKET
from tests.docker_support import port_is_free

pytestmark = [pytest.mark.deploy, pytest.mark.docker, pytest.mark.slow,
              pytest.mark.timeout(1800)]

VOLUME_SUFFIXES = ("clawdbot", "homebrew", "clawd", "chrome")


@pytest.fixture
def ports():
    """A free window in 33200-33399: one VNC pair for the bot, then the dashboard's HTTP port.

    Random, so two runs of this test at once on the shared daemon do not collide.
    """
    for _ in range(50):
        start = random.randrange(33200, 33396, 4)
        if all(port_is_free(p, "127.0.0.1") for p in range(start, start + 3)):
            return {"start": start, "end": start + 1, "web": start + 2}
    pytest.fail("no free port window in 33200-33399", pytrace=False)


def _env(agent_image: str, ports=None, **extra: str) -> dict[str, str]:
    ports = ports or {"start": 33200, "end": 33399}
    return {
        "SECRET_KEY": "claworc-deploy-test-secret",
        "CLAWORC_ENCRYPTION_KEY": "y9v4m3b0l9cH3A3dB2mYk1V3tW5nQ0xRzJ8sE6fG7hI=",
        "CLAWORC_NODE_IP": "127.0.0.1",
        "CLAWORC_DOCKER_CONFIG_DIR": "/app/data/configs",
        "CLAWORC_DOCKER_PRIVILEGED": "false",  # this kernel refuses --privileged
        "CLAWORC_DOCKER_INIT": "true",  # the stand-in agent ignores SIGTERM as PID 1
        "CLAWORC_AGENT_IMAGE": agent_image,
        "CLAWORC_PORT_START": str(ports["start"]),
        "CLAWORC_PORT_END": str(ports["end"]),
        "CLAWORC_RECONCILE_INTERVAL": "5",
        **extra,
    }


def _remove_container(client, name: str) -> None:
    try:
        client.containers.get(name).remove(force=True, v=True)
    except docker.errors.NotFound:
        pass


def _remove_volume(client, name: str) -> None:
    try:
        client.volumes.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass


def _wait_healthy(container, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status in {"exited", "dead"}:
            pytest.fail(f"dashboard exited:\n{container.logs(tail=60).decode()}", pytrace=False)
        if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(1)
    pytest.fail(f"dashboard not healthy after {timeout:g} s:\n{container.logs(tail=60).decode()}",
                pytrace=False)


def _manage_shell(container, code: str) -> str:
    # Through the entrypoint: as the dashboard's own user, with its keys, like a person would.
    result = container.exec_run(
        ["claworc-entrypoint", "python", "manage.py", "shell", "-c", code], demux=True
    )
    out, err = (part.decode() if part else "" for part in result.output)
    assert result.exit_code == 0, f"manage.py shell failed ({result.exit_code}):\n{out}\n{err}"
    return out


def _wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what} within {timeout:g} s (last: {last!r})", pytrace=False)


@pytest.fixture
def names():
    suffix = uuid.uuid4().hex[:6]
    return {
        "dashboard": f"bot-t8-dash-{suffix}",
        "data": f"bot-t8-data-{suffix}",
        "bot": f"bot-t8-sib-{suffix}",
    }


@pytest.fixture
def cleanup(docker_client, names):
    yield
    _remove_container(docker_client, names["bot"])
    for suffix in VOLUME_SUFFIXES:
        _remove_volume(docker_client, f"claworc-{names['bot']}-{suffix}")
    _remove_container(docker_client, names["dashboard"])
    _remove_volume(docker_client, names["data"])


def test_dashboard_in_docker_creates_a_sibling_bot_that_sees_its_config(
    docker_client, dashboard_image, agent_image, names, ports, cleanup
):
    docker_client.volumes.create(names["data"])
    dashboard = docker_client.containers.run(
        dashboard_image,  # default command: web, worker and beat, as the seed's `docker run`
        name=names["dashboard"],
        detach=True,
        volumes={DOCKER_SOCKET: {"bind": "/var/run/docker.sock", "mode": "rw"},
                 names["data"]: {"bind": "/app/data", "mode": "rw"}},
        ports={"8000/tcp": ("127.0.0.1", ports["web"])},
        environment=_env(agent_image, ports),
    )
    _wait_healthy(dashboard)
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['web']}/health", timeout=10) as resp:
        health = json.load(resp)
    assert health["orchestrator_backend"] == "docker"
    # The server side drops root: the socket's group is what grants access.
    uid = dashboard.exec_run(["stat", "-c", "%u", "/proc/1"]).output.decode().strip()
    gunicorn_uid = dashboard.exec_run(
        ["sh", "-c", "for p in /proc/[0-9]*; do grep -q gunicorn $p/cmdline 2>/dev/null && "
         "stat -c %u $p && break; done"]
    ).output.decode().strip()
    assert (uid, gunicorn_uid) == ("10001", "10001")

    token = uuid.uuid4().hex
    config = {"agent": {"name": "deploy test", "token": token}}
    out = _manage_shell(dashboard, (
        "from instances import services\n"
        f"i = services.instance_create(display_name='T8 sibling', name={names['bot']!r}, "
        f"clawdbot_config={config!r})\n"
        "print('CREATED', i.pk, i.name)\n"
    ))
    assert f"CREATED 1 {names['bot']}" in out

    # The dashboard's own worker (embedded broker) creates the bot on the HOST daemon.
    def bot_running():
        try:
            bot = docker_client.containers.get(names["bot"])
        except docker.errors.NotFound:
            return None
        return bot if bot.status == "running" else None

    bot = _wait_for(bot_running, 120, "the bot container was not running on the host daemon")
    assert agent_image in bot.image.tags
    assert bot.labels["managed-by"] == "claworc"
    assert bot.labels["claworc.instance"] == names["bot"]

    # The config bind-mount comes from the data volume's host path, not /app/data.
    data_path = docker_client.volumes.get(names["data"]).attrs["Mountpoint"]
    [config_mount] = [m for m in bot.attrs["Mounts"] if m["Destination"] ==
                      "/etc/clawdbot/clawdbot.json"]
    assert config_mount["Source"] == f"{data_path}/configs/{names['bot']}/clawdbot.json"
    seen = bot.exec_run(["cat", "/etc/clawdbot/clawdbot.json"])
    assert seen.exit_code == 0, seen.output
    assert json.loads(seen.output) == config

    # Its four volumes, and Chrome VNC answering on the allocated host port.
    mounted = {m["Name"] for m in bot.attrs["Mounts"] if m["Type"] == "volume"}
    assert mounted == {f"claworc-{names['bot']}-{s}" for s in VOLUME_SUFFIXES}
    bindings = bot.attrs["HostConfig"]["PortBindings"]
    assert bindings["6081/tcp"][0]["HostPort"] == str(ports["start"])
    assert bindings["6082/tcp"][0]["HostPort"] == str(ports["start"] + 1)
    chrome_url = f"http://127.0.0.1:{ports['start']}/vnc.html"

    def chrome_vnc():
        try:
            with urllib.request.urlopen(chrome_url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    assert "chrome vnc" in _wait_for(chrome_vnc, 30, "Chrome VNC did not answer")

    def status():
        out = _manage_shell(dashboard, (
            "from instances.models import Instance\n"
            f"print('STATUS', Instance.objects.get(name={names['bot']!r}).status)\n"
        ))
        return "STATUS running" in out

    _wait_for(status, 60, "the instance was not marked running", interval=2)

    # Deleting through the dashboard removes the sibling and its volumes from the host.
    _manage_shell(dashboard, (
        "from instances import services\n"
        "from instances.models import Instance\n"
        f"pk = Instance.objects.get(name={names['bot']!r}).pk\n"
        "services.instance_delete(instance_ids=[pk], keep_volumes=False)\n"
    ))

    def left():
        return {v.name for v in docker_client.volumes.list(
            filters={"name": f"claworc-{names['bot']}-"})}

    def gone():
        # The volumes go after the container, so both are waited on.
        try:
            docker_client.containers.get(names["bot"])
            return False
        except docker.errors.NotFound:
            return not left()

    _wait_for(gone, 60, "the bot container and its volumes were not removed")

    def row_gone():
        # The row and the delete's Activity go after the volumes: the teardown is over then.
        out = _manage_shell(dashboard, (
            "from instances.models import Activity, Instance\n"
            f"print('LEFT', Instance.objects.filter(name={names['bot']!r}).exists(),"
            f" Activity.objects.filter(instance_name={names['bot']!r}, action='delete',"
            " result='ok').exists())\n"
        ))
        return "LEFT False True" in out

    _wait_for(row_gone, 60, "the instance's row was not removed", interval=2)
    # Nothing in the dashboard tried to write where its unprivileged user may not.
    assert "Permission denied" not in dashboard.logs().decode()
    assert left() == set()


def test_refuses_to_start_when_the_config_dir_is_not_shared(
    docker_client, dashboard_image, agent_image, names, cleanup
):
    docker_client.volumes.create(names["data"])
    dashboard = docker_client.containers.run(
        dashboard_image,
        name=names["dashboard"],
        detach=True,
        volumes={DOCKER_SOCKET: {"bind": "/var/run/docker.sock", "mode": "rw"},
                 names["data"]: {"bind": "/app/data", "mode": "rw"}},
        # /tmp/configs is in the container's own layer: no mount holds it.
        environment=_env(agent_image, CLAWORC_DOCKER_CONFIG_DIR="/tmp/configs"),
    )
    result = dashboard.wait(timeout=120)
    logs = dashboard.logs().decode()
    assert result["StatusCode"] == 1, logs
    assert (f"CLAWORC_DOCKER_CONFIG_DIR=/tmp/configs lies in container {names['dashboard']}'s "
            "own filesystem") in logs
    assert ("must point to a path that is the same on both the host and inside the dashboard "
            "container") in logs
    assert "-v claworc-data:/app/data" in logs
    # It stopped before serving or migrating anything.
    assert "Listening at" not in logs
    ls = docker_client.containers.run(
        dashboard_image, ["/app/data"], entrypoint=["ls"], remove=True,
        volumes={names["data"]: {"bind": "/app/data", "mode": "ro"}},
    ).decode()
    assert "claworc.sqlite3" not in ls


def test_a_bind_mounted_config_dir_maps_to_its_host_directory(
    docker_client, dashboard_image, agent_image, names
):
    host_dir = tempfile.mkdtemp(prefix="bot-t8-bind-")
    try:
        out = docker_client.containers.run(
            dashboard_image,
            ["python", "manage.py", "check_docker_host"],
            name=names["dashboard"],
            remove=True,
            volumes={DOCKER_SOCKET: {"bind": "/var/run/docker.sock", "mode": "rw"},
                     host_dir: {"bind": "/srv/claworc", "mode": "rw"}},
            environment=_env(agent_image, CLAWORC_DATA_DIR="/srv/claworc",
                             CLAWORC_DOCKER_CONFIG_DIR="/srv/claworc/configs"),
        ).decode()
        assert (f"CLAWORC_DOCKER_CONFIG_DIR=/srv/claworc/configs is {host_dir}/configs on the "
                "Docker daemon.") in out
        # The entrypoint made the directory, owned by the dashboard's user, on the host.
        assert os.stat(os.path.join(host_dir, "configs")).st_uid == 10001
    finally:
        _remove_container(docker_client, names["dashboard"])
        shutil.rmtree(host_dir, ignore_errors=True)
