"""A key change on the real daemon: the container is recreated with the new environment and
nothing in any of the four volumes is lost (the seed: "Secret updates require container
recreation ... Volumes persist across recreation so no data is lost").

Everything made here is named `bot-t7-<token>` and uses host ports 33000-33199.
"""

import random
import secrets

import pytest

from orchestrators.base import VOLUME_MOUNTS, InstanceSpec, Status
from orchestrators.docker import DockerOrchestrator, volume_names
from tests.docker_support import port_is_free, remove_instance_objects

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PORT_LOW, PORT_HIGH = 33000, 33199


def free_pair() -> tuple[int, int]:
    pairs = list(range(PORT_LOW, PORT_HIGH, 2))
    random.shuffle(pairs)
    for port in pairs:
        if port_is_free(port) and port_is_free(port + 1):
            return port, port + 1
    raise RuntimeError("no free port pair in 33000-33199")


@pytest.fixture
def t7_name(docker_client, tmp_path):
    name = f"bot-t7-{secrets.token_hex(3)}"
    yield name
    remove_instance_objects(docker_client, name)


def _exec(container, command: str) -> str:
    code, output = container.exec_run(["sh", "-c", command])
    assert code == 0, output.decode()
    return output.decode()


def _env(container) -> dict[str, str]:
    container.reload()
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def test_key_change_recreates_with_new_env_and_keeps_every_volume(
        docker_client, agent_image, t7_name, tmp_path):
    orch = DockerOrchestrator(config_dir=str(tmp_path / "configs"), privileged=False,
                              init=True, timeout=30)
    chrome, terminal = free_pair()
    spec = InstanceSpec(
        name=t7_name, image=agent_image, port_chrome=chrome, port_terminal=terminal,
        env={"ANTHROPIC_API_KEY": "sk-ant-t7-OLD-1111", "BRAVE_API_KEY": "brave-t7-2222"},
        privileged=False,
    )
    assert orch.ensure(spec).status in {Status.RUNNING, Status.CREATING}
    before = docker_client.containers.get(t7_name)
    for suffix, path in VOLUME_MOUNTS.items():
        _exec(before, f"echo 'kept in {suffix}' > {path}/t7-marker")

    # A new Anthropic key, a new OpenAI key, the Brave override cleared with no global behind it.
    changed = InstanceSpec(
        name=t7_name, image=agent_image, port_chrome=chrome, port_terminal=terminal,
        env={"ANTHROPIC_API_KEY": "sk-ant-t7-NEW-3333", "OPENAI_API_KEY": "sk-oai-t7-4444"},
        privileged=False,
    )
    assert orch.ensure(changed).status in {Status.RUNNING, Status.CREATING}

    after = docker_client.containers.get(t7_name)
    assert after.id != before.id, "a new environment needs a new container"
    assert after.status == "running"
    env = _env(after)
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-t7-NEW-3333"
    assert env["OPENAI_API_KEY"] == "sk-oai-t7-4444"
    assert "BRAVE_API_KEY" not in env
    assert "sk-ant-t7-OLD-1111" not in str(after.attrs)
    assert _exec(after, "echo $ANTHROPIC_API_KEY").strip() == "sk-ant-t7-NEW-3333"
    for suffix, path in VOLUME_MOUNTS.items():
        assert _exec(after, f"cat {path}/t7-marker").strip() == f"kept in {suffix}"
    mounted = {m["Name"] for m in after.attrs["Mounts"] if m["Type"] == "volume"}
    assert mounted == set(volume_names(t7_name).values())

    # The same keys again: nothing to do, the container stays.
    orch.ensure(changed)
    assert docker_client.containers.get(t7_name).id == after.id


def test_keys_appear_only_in_the_instance_container(docker_client, agent_image, t7_name,
                                                    tmp_path):
    orch = DockerOrchestrator(config_dir=str(tmp_path / "configs"), privileged=False,
                              init=True, timeout=30)
    chrome, terminal = free_pair()
    secret = f"sk-ant-t7-only-here-{secrets.token_hex(8)}"
    orch.ensure(InstanceSpec(name=t7_name, image=agent_image, port_chrome=chrome,
                             port_terminal=terminal, env={"ANTHROPIC_API_KEY": secret},
                             config={"agent": {"name": "t7"}}, privileged=False))
    assert secret in str(docker_client.api.inspect_container(t7_name))
    for volume in volume_names(t7_name).values():
        assert secret not in str(docker_client.api.inspect_volume(volume))
    config_file = tmp_path / "configs" / t7_name / "clawdbot.json"
    assert secret not in config_file.read_text()
    assert secret not in str(orch.status(t7_name)) + str(orch.status_all().get(t7_name))
