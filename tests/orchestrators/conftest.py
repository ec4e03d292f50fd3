"""Fixtures for the Docker backend's tests against the real daemon.

Several people share this daemon: everything made here is named `bot-t3-<token>-…` and uses
host ports 31000-31199, and finalizers remove exactly what was made, even when a test fails.
"""

import random
import secrets

import pytest

from orchestrators.base import InstanceSpec, Resources
from orchestrators.docker import DockerOrchestrator
from tests.docker_support import port_is_free, remove_instance_objects

T3_PREFIX = "bot-t3-"
PORT_LOW, PORT_HIGH = 31000, 31199


class PortPairs:
    """Hands out even/odd pairs in 31000-31199 that nothing on this host listens on now.

    The start is random so two test runs on the shared daemon rarely pick the same pair.
    """

    def __init__(self) -> None:
        pairs = list(range(PORT_LOW, PORT_HIGH, 2))
        start = random.randrange(len(pairs))
        self._pairs = pairs[start:] + pairs[:start]

    def take(self) -> tuple[int, int]:
        while self._pairs:
            port = self._pairs.pop(0)
            if port_is_free(port) and port_is_free(port + 1):
                return port, port + 1
        raise RuntimeError("no free port pair left in 31000-31199")


@pytest.fixture(scope="session")
def t3_ports():
    return PortPairs()


@pytest.fixture
def t3_config_dir(tmp_path):
    path = tmp_path / "configs"
    path.mkdir()
    return path


def remove_instance_leftovers(client, name: str, config_dir=None) -> None:
    """Remove the container, volumes and config dir named after `name` (one of ours)."""
    assert name.startswith(T3_PREFIX), name
    remove_instance_objects(client, name, config_dir)


@pytest.fixture
def docker_orch(docker_client, agent_image, t3_config_dir):
    """The backend under test, configured as tests/testenv.py configures the site."""
    return DockerOrchestrator(
        config_dir=str(t3_config_dir), privileged=False, init=True, timeout=30
    )


@pytest.fixture
def make_spec(docker_client, agent_image, t3_ports, t3_config_dir):
    """make_spec("web", env=…) -> InstanceSpec named bot-t3-<token>-web on a free port pair."""
    token = secrets.token_hex(3)
    made: list[str] = []

    def make(suffix: str, **overrides) -> InstanceSpec:
        name = f"{T3_PREFIX}{token}-{suffix}"
        if name not in made:
            made.append(name)
        if "port_chrome" not in overrides:
            overrides["port_chrome"], overrides["port_terminal"] = t3_ports.take()
        values = {
            "name": name,
            "image": agent_image,
            "env": {"ANTHROPIC_API_KEY": "sk-ant-test-1", "OPENAI_API_KEY": "sk-test-2"},
            "config": {"agent": {"model": "claude"}, "gateway": {"port": 18789}},
            "resources": Resources(cpu_request="250m", cpu_limit="1500m",
                                   memory_request="64Mi", memory_limit="256Mi"),
            "privileged": False,
        }
        values.update(overrides)
        return InstanceSpec(**values)

    yield make
    for name in made:
        remove_instance_leftovers(docker_client, name, t3_config_dir)
