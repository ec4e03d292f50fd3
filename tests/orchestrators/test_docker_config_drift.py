"""The config file is observed state: status_all reports what the Docker host's file holds, ensure
writes it back, and a container that cannot start because a mount is gone says so."""

import os
import shutil

import pytest

from orchestrators.base import FinalError, Status
from orchestrators.docker import (
    DockerOrchestrator,
    config_path,
    observed_from_inspect,
)

from .test_docker_daemon import exec_out, inspect


@pytest.mark.docker
def test_status_all_reports_a_deleted_or_edited_config_file_and_ensure_rewrites_it(
        docker_client, docker_orch, make_spec):
    spec = make_spec("cfg")
    docker_orch.ensure(spec)
    path = config_path(docker_orch.config_dir, spec.name)
    wanted = docker_orch.config_digest(spec.config)
    assert docker_orch.status_all()[spec.name].config_digest == wanted

    os.remove(path)  # deleted on the host
    assert docker_orch.status_all()[spec.name].config_digest == ""
    started = inspect(docker_client, spec.name)["State"]["StartedAt"]
    assert docker_orch.ensure(spec).status is Status.RUNNING
    assert docker_orch.status_all()[spec.name].config_digest == wanted
    # Restarted, so the container mounts the rewritten file, not the deleted one.
    assert inspect(docker_client, spec.name)["State"]["StartedAt"] != started
    assert '"model": "claude"' in exec_out(docker_client, spec.name, "cat",
                                            "/etc/clawdbot/clawdbot.json")

    with open(path, "a") as f:  # edited on the host
        f.write("// edited by hand\n")
    edited = docker_orch.status_all()[spec.name].config_digest
    assert edited not in ("", wanted)
    docker_orch.ensure(spec)
    assert docker_orch.status_all()[spec.name].config_digest == wanted
    assert "edited by hand" not in exec_out(docker_client, spec.name, "cat",
                                             "/etc/clawdbot/clawdbot.json")

    shutil.rmtree(os.path.dirname(path))  # the whole directory
    assert docker_orch.status_all()[spec.name].config_digest == ""


@pytest.mark.docker
def test_a_config_file_the_daemon_cannot_see_is_named_as_a_missing_mount(
        docker_client, agent_image, t3_config_dir, make_spec, tmp_path):
    # A dashboard in a container whose config directory is not the host's (the seed's
    # "Config file not visible in container").
    orch = DockerOrchestrator(config_dir=str(t3_config_dir), privileged=False, init=True,
                              host_config_dir=str(tmp_path / "not-on-the-host"))
    spec = make_spec("unseen")
    with pytest.raises(FinalError) as caught:
        orch.ensure(spec)
    message = str(caught.value)
    assert "a file it mounts is missing on the Docker host" in message
    assert "bind source path does not exist" in message
    assert "CLAWORC_DOCKER_CONFIG_DIR" in message
    assert "docker logs" not in message
    assert docker_client.containers.list(all=True, filters={"name": spec.name}) == []


def test_an_exit_caused_by_a_missing_mount_says_so():
    error = ('failed to create shim task: OCI runtime create failed: runc create failed: unable '
             'to start container process: error during container init: error mounting '
             '"/data/configs/bot-x/clawdbot.json" to rootfs at "/etc/clawdbot/clawdbot.json": '
             'stat /data/configs/bot-x/clawdbot.json: no such file or directory: unknown')
    attrs = {"State": {"Status": "exited", "ExitCode": 127, "Error": error}}
    observed = observed_from_inspect("bot-x", attrs)
    assert observed.message.startswith(
        "exited with code 127: it could not be started again because a file it mounts is "
        "missing on the Docker host (")
    assert "/data/configs/bot-x/clawdbot.json" in observed.message


@pytest.mark.docker
def test_status_all_reads_a_config_file_again_only_when_it_changed(
        docker_orch, make_spec, monkeypatch):
    spec = make_spec("cfgcache")
    docker_orch.ensure(spec)
    wanted = docker_orch.config_digest(spec.config)
    assert docker_orch.status_all()[spec.name].config_digest == wanted
    reads = []
    real_open = open

    def counting_open(path, *args, **kwargs):
        reads.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    # Unchanged: a stat, no read, at every beat.
    assert docker_orch.status_all()[spec.name].config_digest == wanted
    path = config_path(docker_orch.config_dir, spec.name)
    assert path not in reads
    # Changed (another inode, as an editor that saves by renaming makes): read again.
    with real_open(path + ".new", "w") as f:
        f.write("{}\n")
    os.replace(path + ".new", path)
    assert docker_orch.status_all()[spec.name].config_digest not in ("", wanted)
    assert reads.count(path) == 1
