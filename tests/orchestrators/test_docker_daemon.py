"""The Docker backend against the real daemon, with the stand-in agent image.

Every assertion reads the real thing: `docker inspect`, the files inside the container, HTTP on
the published ports.
"""

import json
import os
import socket
import threading
import time
import urllib.request

import pytest

from orchestrators.base import (
    CONFIG_MOUNT_PATH,
    VOLUME_MOUNTS,
    FinalError,
    PortConflict,
    Status,
    TransientError,
)
from orchestrators.docker import DockerOrchestrator, config_path, volume_names

pytestmark = pytest.mark.docker


def http_get(port: int, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                return answer.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def exec_out(client, name: str, *cmd: str) -> str:
    result = client.containers.get(name).exec_run(list(cmd))
    assert result.exit_code == 0, result.output
    return result.output.decode()


def inspect(client, name: str) -> dict:
    return client.api.inspect_container(name)


def names_of_everything(client, name: str) -> list[str]:
    containers = [c.name for c in client.containers.list(all=True, filters={"name": name})]
    volumes = [v.name for v in client.volumes.list(filters={"name": name})]
    return containers + volumes


def test_ensure_creates_the_container_the_seed_describes(docker_client, docker_orch, make_spec):
    spec = make_spec("full")
    observed = docker_orch.ensure(spec)
    assert observed.status is Status.RUNNING and observed.exists

    attrs = inspect(docker_client, spec.name)
    assert attrs["Name"] == f"/{spec.name}"
    assert attrs["Config"]["Image"] == spec.image
    labels = attrs["Config"]["Labels"]
    assert labels["managed-by"] == "claworc"
    assert labels["claworc.instance"] == spec.name
    assert "sk-ant-test-1" not in json.dumps(labels)
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-test-1"
    assert env["OPENAI_API_KEY"] == "sk-test-2"
    host = attrs["HostConfig"]
    assert host["Privileged"] is False
    assert host["Init"] is True
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["NanoCpus"] == 1_500_000_000
    assert host["CpuShares"] == 256
    assert host["Memory"] == 256 * 2**20
    assert host["MemoryReservation"] == 64 * 2**20
    assert host["PortBindings"] == {
        "6081/tcp": [{"HostIp": "", "HostPort": str(spec.port_chrome)}],
        "6082/tcp": [{"HostIp": "", "HostPort": str(spec.port_terminal)}],
    }

    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    for suffix, path in VOLUME_MOUNTS.items():
        assert mounts[path]["Type"] == "volume"
        assert mounts[path]["Name"] == f"claworc-{spec.name}-{suffix}"
        assert mounts[path]["RW"] is True
    config_mount = mounts[CONFIG_MOUNT_PATH]
    assert config_mount["Type"] == "bind"
    assert config_mount["Source"] == config_path(docker_orch.config_dir, spec.name)
    assert config_mount["RW"] is False
    for volume in volume_names(spec.name).values():
        assert docker_client.volumes.get(volume).attrs["Labels"] == {
            "managed-by": "claworc", "claworc.instance": spec.name,
        }

    assert http_get(spec.port_chrome).strip() == "chrome vnc"
    assert http_get(spec.port_terminal).strip() == "terminal vnc"
    inside = exec_out(docker_client, spec.name, "cat", CONFIG_MOUNT_PATH)
    assert json.loads(inside) == spec.config
    on_host = config_path(docker_orch.config_dir, spec.name)
    assert json.loads(open(on_host).read()) == spec.config


def test_ensure_twice_is_the_same_container(docker_client, docker_orch, make_spec):
    spec = make_spec("twice")
    docker_orch.ensure(spec)
    first = inspect(docker_client, spec.name)
    again = docker_orch.ensure(spec)
    second = inspect(docker_client, spec.name)
    assert again.status is Status.RUNNING
    assert second["Id"] == first["Id"]
    assert second["State"]["StartedAt"] == first["State"]["StartedAt"]  # not even restarted


def test_concurrent_ensures_converge_on_one_container(docker_client, docker_orch, make_spec):
    spec = make_spec("race")
    results, errors = [], []

    def run():
        try:
            results.append(DockerOrchestrator(config_dir=docker_orch.config_dir, privileged=False,
                                              init=True).ensure(spec))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(docker_client.containers.list(all=True, filters={"name": spec.name})) == 1
    assert docker_orch.status(spec.name).status is Status.RUNNING


def test_stop_start_restart_with_status_at_each_step(docker_client, docker_orch, make_spec):
    spec = make_spec("life")
    docker_orch.ensure(spec)
    assert docker_orch.status(spec.name).status is Status.RUNNING

    stopped = docker_orch.stop(spec.name)
    assert stopped.status is Status.STOPPED and stopped.exists
    assert stopped.exit_code is not None
    assert inspect(docker_client, spec.name)["State"]["Status"] == "exited"
    listed = docker_orch.status_all()[spec.name]
    assert (listed.status, listed.exit_code) == (Status.STOPPED, stopped.exit_code)
    assert docker_orch.stop(spec.name).status is Status.STOPPED  # already stopped: fine
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{spec.port_chrome}/", timeout=2)

    started = docker_orch.start(spec.name)
    assert started.status is Status.RUNNING
    assert http_get(spec.port_chrome).strip() == "chrome vnc"
    assert docker_orch.status_all()[spec.name].status is Status.RUNNING

    before = inspect(docker_client, spec.name)["State"]["StartedAt"]
    restarted = docker_orch.restart(spec.name)
    assert restarted.status is Status.RUNNING
    assert inspect(docker_client, spec.name)["State"]["StartedAt"] > before
    assert http_get(spec.port_terminal).strip() == "terminal vnc"

    docker_orch.stop(spec.name)
    assert docker_orch.restart(spec.name).status is Status.RUNNING  # restart starts a stopped one


def test_missing_container_status_start_stop_logs(docker_orch, make_spec):
    spec = make_spec("ghost")
    observed = docker_orch.status(spec.name)
    assert (observed.status, observed.exists) == (Status.STOPPED, False)
    assert docker_orch.stop(spec.name).exists is False
    assert docker_orch.logs(spec.name) == ""
    with pytest.raises(FinalError, match="No container"):
        docker_orch.start(spec.name)
    docker_orch.delete(spec.name, purge_volumes=True)  # gone is success


def test_crashed_container_carries_exit_code_and_log_tail(docker_client, docker_orch, make_spec):
    spec = make_spec("crash")
    docker_orch.ensure(spec)
    # Simulate a crash: the agent's main process exits with an error.
    docker_client.api.kill(spec.name, signal="SIGKILL")
    observed = docker_orch.status(spec.name)
    assert observed.status is Status.STOPPED
    assert observed.exit_code == 137
    listed = docker_orch.status_all()[spec.name]
    assert listed.exit_code == 137


def test_config_change_rewrites_the_file_and_restarts(docker_client, docker_orch, make_spec):
    spec = make_spec("conf")
    docker_orch.ensure(spec)
    before = inspect(docker_client, spec.name)
    changed = make_spec("conf", config={"agent": {"model": "new"}}, port_chrome=spec.port_chrome,
                        port_terminal=spec.port_terminal)
    docker_orch.ensure(changed)
    after = inspect(docker_client, spec.name)
    assert after["Id"] == before["Id"]  # a config change restarts, it does not recreate
    assert after["State"]["StartedAt"] > before["State"]["StartedAt"]
    inside = exec_out(docker_client, spec.name, "cat", CONFIG_MOUNT_PATH)
    assert json.loads(inside) == {"agent": {"model": "new"}}
    docker_orch.ensure(changed)
    assert inspect(docker_client, spec.name)["State"]["StartedAt"] == after["State"]["StartedAt"]


def test_config_written_but_not_restarted_is_caught_up(docker_client, docker_orch, make_spec):
    """A worker that died between writing the file and restarting: the next ensure restarts."""
    spec = make_spec("catchup")
    docker_orch.ensure(spec)
    with open(config_path(docker_orch.config_dir, spec.name), "w") as out:
        out.write(json.dumps({"written": "by a worker that then died"}))
    changed = make_spec("catchup", config={"written": "by a worker that then died"},
                        port_chrome=spec.port_chrome, port_terminal=spec.port_terminal)
    docker_orch.ensure(changed)
    inside = exec_out(docker_client, spec.name, "cat", CONFIG_MOUNT_PATH)
    assert json.loads(inside) == {"written": "by a worker that then died"}


def test_key_rotation_recreates_and_every_volume_keeps_its_files(
    docker_client, docker_orch, make_spec
):
    spec = make_spec("rotate")
    docker_orch.ensure(spec)
    old_id = inspect(docker_client, spec.name)["Id"]
    for suffix, path in VOLUME_MOUNTS.items():
        exec_out(docker_client, spec.name, "sh", "-c", f"echo kept-{suffix} > {path}/kept.txt")

    rotated = make_spec("rotate", env={"ANTHROPIC_API_KEY": "sk-ant-rotated"},
                        port_chrome=spec.port_chrome, port_terminal=spec.port_terminal)
    observed = docker_orch.ensure(rotated)
    assert observed.status is Status.RUNNING
    attrs = inspect(docker_client, spec.name)
    assert attrs["Id"] != old_id
    env = dict(item.split("=", 1) for item in attrs["Config"]["Env"])
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-rotated"
    assert "OPENAI_API_KEY" not in env
    for suffix, path in VOLUME_MOUNTS.items():
        assert exec_out(docker_client, spec.name, "cat", f"{path}/kept.txt") == f"kept-{suffix}\n"
    assert http_get(spec.port_chrome).strip() == "chrome vnc"

    # recreate() does the same on request, even with an unchanged spec.
    third = docker_orch.recreate(rotated)
    assert third.status is Status.RUNNING
    assert inspect(docker_client, spec.name)["Id"] != attrs["Id"]
    assert exec_out(docker_client, spec.name, "cat", "/root/clawd/kept.txt") == "kept-clawd\n"


def test_changed_ports_recreate_on_the_new_ports(docker_client, docker_orch, make_spec, t3_ports):
    spec = make_spec("ports")
    docker_orch.ensure(spec)
    chrome, terminal = t3_ports.take()
    moved = make_spec("ports", port_chrome=chrome, port_terminal=terminal)
    docker_orch.ensure(moved)
    assert http_get(chrome).strip() == "chrome vnc"
    assert http_get(terminal).strip() == "terminal vnc"
    bindings = inspect(docker_client, spec.name)["HostConfig"]["PortBindings"]
    assert bindings["6081/tcp"][0]["HostPort"] == str(chrome)


def test_delete_keeps_volumes_then_purge_leaves_nothing(docker_client, docker_orch, make_spec):
    spec = make_spec("gone")
    docker_orch.ensure(spec)
    exec_out(docker_client, spec.name, "sh", "-c", "echo data > /root/clawd/data.txt")
    instance_dir = os.path.join(docker_orch.config_dir, spec.name)

    docker_orch.delete(spec.name)
    assert set(names_of_everything(docker_client, spec.name)) == set(
        volume_names(spec.name).values()
    )
    assert not os.path.exists(instance_dir)
    assert docker_orch.status(spec.name).exists is False

    # The volumes still hold the data: ensure again finds it.
    docker_orch.ensure(spec)
    assert exec_out(docker_client, spec.name, "cat", "/root/clawd/data.txt") == "data\n"

    docker_orch.delete(spec.name, purge_volumes=True)
    assert names_of_everything(docker_client, spec.name) == []
    assert not os.path.exists(instance_dir)
    docker_orch.delete(spec.name, purge_volumes=True)  # already gone: success


def test_port_taken_by_another_process_is_a_final_error_leaving_nothing(
    docker_client, docker_orch, make_spec
):
    spec = make_spec("busy")
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", spec.port_terminal))
        holder.listen()
        with pytest.raises(PortConflict) as caught:
            docker_orch.ensure(spec)
    assert caught.value.ports == (spec.port_chrome, spec.port_terminal)
    message = str(caught.value)
    assert message.startswith(f"Port {spec.port_terminal} is already in use on the Docker host")
    assert "CLAWORC_PORT_START/CLAWORC_PORT_END" in message
    assert "sk-" not in message
    assert names_of_everything(docker_client, spec.name) == []
    assert not os.path.exists(os.path.join(docker_orch.config_dir, spec.name))


def test_port_taken_on_recreate_keeps_the_volumes(docker_client, docker_orch, make_spec, t3_ports):
    spec = make_spec("busy2")
    docker_orch.ensure(spec)
    chrome, terminal = t3_ports.take()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", chrome))
        holder.listen()
        with pytest.raises(FinalError, match=f"Port {chrome} is already in use"):
            docker_orch.ensure(make_spec("busy2", port_chrome=chrome, port_terminal=terminal))
    assert set(names_of_everything(docker_client, spec.name)) == set(
        volume_names(spec.name).values()
    )


def test_missing_image_is_a_final_error_leaving_nothing(docker_client, docker_orch, make_spec):
    spec = make_spec("noimage", image="claworc-test-missing/agent:never")
    with pytest.raises(FinalError, match="Image claworc-test-missing/agent:never is not on the"):
        docker_orch.ensure(spec)
    assert names_of_everything(docker_client, spec.name) == []


def test_a_foreign_container_with_the_name_is_never_touched(
    docker_client, docker_orch, make_spec, agent_image
):
    spec = make_spec("foreign")
    docker_client.containers.create(agent_image, name=spec.name)
    with pytest.raises(FinalError, match="not managed by Claworc"):
        docker_orch.ensure(spec)
    with pytest.raises(FinalError, match="not managed by Claworc"):
        docker_orch.delete(spec.name, purge_volumes=True)
    assert docker_orch.status(spec.name).status is Status.ERROR
    assert docker_client.containers.get(spec.name).status == "created"


def test_logs_return_the_last_lines(docker_client, docker_orch, make_spec):
    spec = make_spec("logs")
    docker_orch.ensure(spec)
    # Write to PID 1's stdout, which is what `docker logs` shows.
    exec_out(docker_client, spec.name, "sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done "
             "> /proc/1/fd/1")
    deadline = time.monotonic() + 5
    while "line5" not in docker_orch.logs(spec.name, lines=2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert docker_orch.logs(spec.name, lines=2) == "line4\nline5\n"


def test_status_all_is_one_api_call(docker_orch, make_spec):
    import docker as docker_sdk

    running, stopped = make_spec("all-a"), make_spec("all-b")
    docker_orch.ensure(running)
    docker_orch.ensure(stopped)
    docker_orch.stop(stopped.name)

    client = docker_sdk.from_env(timeout=30)  # version negotiated here, before counting
    requests_seen = []
    client.api.hooks["response"].append(lambda r, *a, **k: requests_seen.append(r.request.url))
    counted = DockerOrchestrator(config_dir=docker_orch.config_dir, privileged=False, init=True,
                                 client=client)
    everything = counted.status_all()
    assert len(requests_seen) == 1, requests_seen
    assert "/containers/json" in requests_seen[0]
    assert everything[running.name].status is Status.RUNNING
    assert everything[stopped.name].status is Status.STOPPED
    assert everything[stopped.name].exit_code is not None
    assert all(obs.name == name for name, obs in everything.items())

    requests_seen.clear()
    volumes = counted.volumes_all()
    assert len(requests_seen) == 1 and "/volumes" in requests_seen[0], requests_seen
    for spec in (running, stopped):
        assert volumes[spec.name] == sorted(volume_names(spec.name).values())


def test_ping_answers_with_the_server_version(docker_orch, docker_client):
    assert docker_orch.ping() == (
        f"ping ok, server {docker_client.version()['Version']} "
        f"(API {docker_client.version()['ApiVersion']})"
    )


@pytest.mark.parametrize("host", ["tcp://127.0.0.1:1", "unix:///nonexistent/claworc/docker.sock"])
def test_docker_host_pointing_at_nothing(settings, caplog, make_spec, host):
    settings.CLAWORC_DOCKER_HOST = host
    orch = DockerOrchestrator.from_settings()
    spec = make_spec("nohost")
    for call in (orch.ping, orch.status_all, lambda: orch.ensure(spec),
                 lambda: orch.status(spec.name)):
        caplog.clear()
        with pytest.raises(TransientError, match="^Docker not available: "):
            call()
        assert "Docker not available" in caplog.text
    assert not os.path.exists(os.path.join(orch.config_dir, spec.name))


def test_refused_privileged_mode_quotes_the_seeds_hint(docker_client, make_spec, t3_config_dir):
    """This kernel refuses --privileged, which shows the message a user would get."""
    orch = DockerOrchestrator(config_dir=str(t3_config_dir), privileged=True, init=True)
    spec = make_spec("priv", privileged=True)
    try:
        orch.ensure(spec)
    except FinalError as exc:
        assert "The agent image requires --privileged mode" in str(exc)
        assert names_of_everything(docker_client, spec.name) == []
    else:
        assert inspect(docker_client, spec.name)["HostConfig"]["Privileged"] is True



def test_bind_mount_source_is_the_daemon_side_config_dir(docker_client, make_spec, tmp_path):
    """The dashboard writes under config_dir; the daemon mounts from host_config_dir."""
    real = tmp_path / "daemon-side"
    real.mkdir()
    seen_by_dashboard = tmp_path / "dashboard-side"
    seen_by_dashboard.symlink_to(real)
    orch = DockerOrchestrator(config_dir=str(seen_by_dashboard), host_config_dir=str(real),
                              privileged=False, init=True)
    spec = make_spec("hostdir")
    try:
        orch.ensure(spec)
        mounts = {m["Destination"]: m for m in inspect(docker_client, spec.name)["Mounts"]}
        assert mounts[CONFIG_MOUNT_PATH]["Source"] == config_path(str(real), spec.name)
        inside = exec_out(docker_client, spec.name, "cat", CONFIG_MOUNT_PATH)
        assert json.loads(inside) == spec.config
    finally:
        orch.delete(spec.name, purge_volumes=True)
    assert not (real / spec.name).exists()


def _counted_orchestrator(config_dir) -> tuple[DockerOrchestrator, list[tuple[str, str]]]:
    """A backend on its own client that records every request it sends (method, path)."""
    import urllib.parse

    import docker as docker_sdk

    client = docker_sdk.from_env(timeout=30)  # version negotiated here, before counting
    seen: list[tuple[str, str]] = []
    client.api.hooks["response"].append(lambda r, *a, **k: seen.append(
        (r.request.method, urllib.parse.urlsplit(r.request.url).path)))
    return DockerOrchestrator(config_dir=config_dir, privileged=False, init=True,
                              client=client), seen


def test_ensure_finds_volumes_by_name_never_by_listing_them_all(docker_client, docker_orch,
                                                                 make_spec):
    # A filtered volume list is evaluated over every volume on the daemon (21 ms at 4,000
    # volumes, against 0.8 ms for an inspect): ensure must not depend on the fleet size.
    counted, seen = _counted_orchestrator(docker_orch.config_dir)
    spec = make_spec("vols")
    assert counted.ensure(spec).status is Status.RUNNING
    assert not [path for method, path in seen
                if method == "GET" and path.endswith("/volumes")], seen
    for volume in volume_names(spec.name).values():
        assert docker_client.volumes.get(volume).attrs["Labels"]["claworc.instance"] == spec.name


def test_failed_first_create_keeps_a_volume_that_existed_before(docker_client, docker_orch,
                                                                make_spec):
    spec = make_spec("keepvol", image="claworc-test-missing/agent:never")
    kept = volume_names(spec.name)["clawd"]
    docker_client.volumes.create(name=kept)  # unlabelled, e.g. restored by hand with data
    with pytest.raises(FinalError, match="is not on the Docker host"):
        docker_orch.ensure(spec)
    assert names_of_everything(docker_client, spec.name) == [kept]


def test_a_normal_stop_is_not_a_crash_and_reads_no_log(docker_client, docker_orch, make_spec):
    spec = make_spec("calm")
    docker_orch.ensure(spec)
    docker_orch.stop(spec.name)
    counted, seen = _counted_orchestrator(docker_orch.config_dir)
    observed = counted.status(spec.name)
    assert (observed.status, observed.exit_code) == (Status.STOPPED, 143)
    assert observed.log_tail == ""
    assert not [path for _, path in seen if path.endswith("/logs")], seen


def test_a_crash_carries_its_log_tail(docker_client, docker_orch, make_spec):
    spec = make_spec("boom")
    docker_orch.ensure(spec)
    exec_out(docker_client, spec.name, "sh", "-c", "echo about to fail > /proc/1/fd/1")
    # SIGUSR1 ends busybox httpd: exit 138, neither a clean stop nor a kill.
    docker_client.api.kill(spec.name, signal="SIGUSR1")
    deadline = time.monotonic() + 15
    while inspect(docker_client, spec.name)["State"]["Running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    observed = docker_orch.status(spec.name)
    assert observed.exit_code == 138
    assert "about to fail" in observed.log_tail
