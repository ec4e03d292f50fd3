"""The Docker backend's pure builders and error wording (no daemon needed)."""

import os
import stat

import pytest

from orchestrators.base import (
    CONFIG_MOUNT_PATH,
    FinalError,
    InstanceSpec,
    Resources,
    Status,
    TransientError,
)
from orchestrators.docker import (
    LABEL_SPEC_HASH,
    DockerOrchestrator,
    config_bytes,
    config_path,
    container_create_kwargs,
    map_status,
    observed_from_inspect,
    observed_from_list,
    port_in_use_message,
    volume_names,
    write_atomically,
)


def spec(**overrides) -> InstanceSpec:
    values = {
        "name": "bot-mybot",
        "image": "glukw/openclaw-vnc-chrome:latest",
        "port_chrome": 30100,
        "port_terminal": 30101,
        "env": {"ANTHROPIC_API_KEY": "sk-ant-secret"},
        "config": {"a": 1},
    }
    values.update(overrides)
    return InstanceSpec(**values)


def test_volume_names_follow_the_seed_in_its_order():
    assert list(volume_names("bot-mybot").items()) == [
        ("clawdbot", "claworc-bot-mybot-clawdbot"),
        ("homebrew", "claworc-bot-mybot-homebrew"),
        ("clawd", "claworc-bot-mybot-clawd"),
        ("chrome", "claworc-bot-mybot-chrome"),
    ]


def test_config_path_is_config_dir_name_clawdbot_json():
    assert config_path("/app/data/configs", "bot-mybot") == (
        "/app/data/configs/bot-mybot/clawdbot.json"
    )


def test_create_kwargs_map_every_piece_of_the_seed():
    kwargs = container_create_kwargs(
        spec(), "/host/configs/bot-mybot/clawdbot.json", privileged=True, init=False
    )
    assert kwargs["name"] == "bot-mybot"
    assert kwargs["image"] == "glukw/openclaw-vnc-chrome:latest"
    assert kwargs["environment"] == {"ANTHROPIC_API_KEY": "sk-ant-secret"}
    assert kwargs["privileged"] is True
    assert kwargs["init"] is False
    assert kwargs["restart_policy"] == {"Name": "unless-stopped"}
    assert kwargs["ports"] == {"6081/tcp": 30100, "6082/tcp": 30101}
    labels = kwargs["labels"]
    assert labels["managed-by"] == "claworc"
    assert labels["claworc.instance"] == "bot-mybot"
    assert len(labels[LABEL_SPEC_HASH]) == 32
    # Default resources: 2000m CPU limit, 500m request, 4Gi limit, 1Gi request.
    assert kwargs["nano_cpus"] == 2_000_000_000
    assert kwargs["cpu_shares"] == 512
    assert kwargs["mem_limit"] == 4 * 2**30
    assert kwargs["mem_reservation"] == 2**30
    mounts = [(m["Type"], m["Source"], m["Target"], m["ReadOnly"]) for m in kwargs["mounts"]]
    assert mounts == [
        ("volume", "claworc-bot-mybot-clawdbot", "/root/.clawdbot", False),
        ("volume", "claworc-bot-mybot-homebrew", "/home/linuxbrew/.linuxbrew", False),
        ("volume", "claworc-bot-mybot-clawd", "/root/clawd", False),
        ("volume", "claworc-bot-mybot-chrome", "/root/.config/google-chrome", False),
        ("bind", "/host/configs/bot-mybot/clawdbot.json", CONFIG_MOUNT_PATH, True),
    ]


def test_privileged_off_and_init_on_are_passed_through():
    kwargs = container_create_kwargs(spec(), "/c/x.json", privileged=False, init=True)
    assert kwargs["privileged"] is False
    assert kwargs["init"] is True


def test_spec_hash_is_stable_and_changes_with_what_needs_a_recreate():
    def digest(**overrides):
        kwargs = container_create_kwargs(spec(**overrides), "/c/x.json", privileged=False,
                                         init=True)
        return kwargs["labels"][LABEL_SPEC_HASH]

    base = digest()
    assert digest() == base
    assert digest(config={"something": "else"}) == base  # config changes restart, not recreate
    changed = [
        digest(env={"ANTHROPIC_API_KEY": "sk-ant-rotated"}),
        digest(image="other:1"),
        digest(port_chrome=30102, port_terminal=30103),
        digest(resources=Resources(memory_limit="8Gi")),
    ]
    assert base not in changed
    assert len(set(changed)) == len(changed)
    assert "sk-ant" not in base


def test_bad_quantities_are_value_errors():
    with pytest.raises(ValueError, match="not a CPU quantity"):
        container_create_kwargs(spec(resources=Resources(cpu_limit="lots")), "/c", privileged=False,
                                init=False)
    with pytest.raises(ValueError, match="more than the memory limit"):
        container_create_kwargs(
            spec(resources=Resources(memory_request="8Gi", memory_limit="1Gi")), "/c",
            privileged=False, init=False,
        )


@pytest.mark.parametrize("name", ["../etc", "Bot", "bot_x", "", "-bot", "bot/x"])
def test_names_that_are_not_dns_labels_are_refused(name):
    with pytest.raises(FinalError, match="not a valid instance name"):
        container_create_kwargs(spec(name=name), "/c", privileged=False, init=False)


@pytest.mark.parametrize(
    "state, health, expected",
    [
        ("running", None, Status.RUNNING),
        ("running", "healthy", Status.RUNNING),
        ("running", "starting", Status.CREATING),
        ("running", "unhealthy", Status.ERROR),
        ("created", None, Status.CREATING),
        ("restarting", None, Status.CREATING),
        ("exited", None, Status.STOPPED),
        ("dead", None, Status.STOPPED),
        ("paused", None, Status.STOPPED),
        ("removing", None, Status.STOPPED),
    ],
)
def test_status_mapping_of_issue_3(state, health, expected):
    assert map_status(state, health) is expected


@pytest.mark.parametrize(
    "state, text, status, exit_code",
    [
        ("running", "Up 3 minutes", Status.RUNNING, None),
        ("running", "Up 3 minutes (healthy)", Status.RUNNING, None),
        ("running", "Up 2 seconds (health: starting)", Status.CREATING, None),
        ("running", "Up 5 minutes (unhealthy)", Status.ERROR, None),
        ("running", "Up 5 minutes (Paused)", Status.STOPPED, None),
        ("exited", "Exited (137) 4 seconds ago", Status.STOPPED, 137),
        ("exited", "Exited (0) 1 hour ago", Status.STOPPED, 0),
        ("restarting", "Restarting (1) 2 seconds ago", Status.CREATING, 1),
        ("created", "Created", Status.CREATING, None),
        ("dead", "Dead", Status.STOPPED, None),
    ],
)
def test_observed_from_list_reads_state_and_status_text(state, text, status, exit_code):
    entry = {"Names": ["/bot-x"], "Labels": {"claworc.instance": "bot-x"}, "State": state,
             "Status": text}
    observed = observed_from_list(entry)
    assert (observed.name, observed.status, observed.exit_code) == ("bot-x", status, exit_code)
    assert observed.message == text


def test_observed_from_inspect_keeps_exit_code_and_health_output():
    exited = observed_from_inspect("bot-x", {"State": {"Status": "exited", "ExitCode": 3}})
    assert (exited.status, exited.exit_code, exited.message) == (
        Status.STOPPED, 3, "exited with code 3"
    )
    unhealthy = observed_from_inspect(
        "bot-x",
        {"State": {"Status": "running", "Running": True,
                   "Health": {"Status": "unhealthy", "Log": [{"Output": "curl: refused\n"}]}}},
        log_tail="last line\n",
    )
    assert unhealthy.status is Status.ERROR
    assert unhealthy.message == "health check failing: curl: refused"
    assert unhealthy.log_tail == "last line\n"


@pytest.mark.parametrize(
    "explanation",
    [
        "driver failed programming external connectivity on endpoint bot-x (abc): Error "
        "starting userland proxy: listen tcp4 0.0.0.0:31001: bind: address already in use",
        "driver failed programming external connectivity on endpoint bot-x (abc): Bind for "
        "0.0.0.0:31001 failed: port is already allocated",
    ],
)
def test_port_in_use_message_names_the_port_and_the_settings(explanation):
    message = port_in_use_message(explanation, (31000, 31001))
    assert message.startswith("Port 31001 is already in use on the Docker host")
    assert "CLAWORC_PORT_START/CLAWORC_PORT_END" in message


def test_other_start_errors_are_not_port_errors():
    assert port_in_use_message("unable to apply caps: operation not permitted", (1, 2)) is None


def test_write_atomically_writes_once_and_leaves_no_temp_file(tmp_path):
    path = str(tmp_path / "bot-x" / "clawdbot.json")
    data = config_bytes({"b": 1, "a": [1, 2]})
    assert write_atomically(path, data) is True
    assert open(path, "rb").read() == data
    assert data.startswith(b'{\n  "a"')  # sorted keys: reordering is not a change
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    inode = os.stat(path).st_ino
    assert write_atomically(path, data) is False
    assert os.stat(path).st_ino == inode
    assert write_atomically(path, config_bytes({"a": 2})) is True
    assert os.listdir(os.path.dirname(path)) == ["clawdbot.json"]


def test_constructing_does_not_touch_the_network(tmp_path):
    orch = DockerOrchestrator(base_url="tcp://127.0.0.1:1", config_dir=str(tmp_path))
    assert orch.backend_name == "docker"
    assert orch._client is None
    assert orch._host_config_dir is None  # found from the daemon on first use


def test_unreachable_daemon_is_a_transient_error_logged_as_not_available(tmp_path, caplog):
    orch = DockerOrchestrator(base_url="tcp://127.0.0.1:1", config_dir=str(tmp_path))
    with pytest.raises(TransientError, match="^Docker not available: .*Connection refused"):
        orch.ping()
    assert "Docker not available" in caplog.text
    assert "Connection refused" in caplog.text


def test_from_settings_reads_the_docker_settings(settings, tmp_path):
    settings.CLAWORC_DOCKER_HOST = "unix:///nonexistent/docker.sock"
    settings.CLAWORC_DOCKER_CONFIG_DIR = str(tmp_path)
    settings.CLAWORC_DOCKER_PRIVILEGED = False
    settings.CLAWORC_DOCKER_INIT = True
    settings.CLAWORC_DOCKER_HOST_CONFIG_DIR = "/host/configs"
    orch = DockerOrchestrator.from_settings()
    assert (orch.base_url, orch.config_dir, orch.host_config_dir, orch.privileged, orch.init) == (
        "unix:///nonexistent/docker.sock", str(tmp_path), "/host/configs", False, True
    )
    assert DockerOrchestrator.from_settings(init=False).init is False
    settings.CLAWORC_DOCKER_HOST_CONFIG_DIR = ""
    with pytest.raises(TransientError, match="Docker not available"):
        DockerOrchestrator.from_settings().host_config_dir  # noqa: B018 - resolving it is the test


def test_a_cpu_limit_above_the_hosts_cpus_fails_before_anything_is_touched():
    """Docker refuses it only at create time, after a recreate removed the running container."""
    from orchestrators.base import FinalError, InstanceSpec, Resources
    from orchestrators.docker import DockerOrchestrator

    class Client:
        calls: list = []

        def info(self):
            self.calls.append("info")
            return {"NCPU": 2}

        def __getattr__(self, name):
            raise AssertionError(f"nothing else may be called, not {name}")

    client = Client()
    orch = DockerOrchestrator(config_dir="/nonexistent", host_config_dir="/nonexistent",
                              client=client)
    spec = InstanceSpec(name="bot-cpus", image="busybox", port_chrome=30100,
                        port_terminal=30101, resources=Resources(cpu_limit="3"))
    with pytest.raises(FinalError, match=r"more than the Docker host has \(2 CPUs\)"):
        orch.ensure(spec)
    with pytest.raises(FinalError, match="2 CPUs"):
        orch.recreate(spec)
    assert client.calls == ["info"]  # read once, cached
