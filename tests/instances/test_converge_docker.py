"""What one converge asks of the real Docker daemon."""

import random

import pytest

from instances import services
from instances.models import Instance
from orchestrators import registry
from orchestrators.docker import DockerOrchestrator
from tests.docker_support import remove_instance_objects

pytestmark = [pytest.mark.django_db, pytest.mark.docker]


@pytest.mark.parametrize("workload", ["new", "running"])
def test_a_converge_inspects_the_image_once(docker_client, agent_image, tmp_path, settings,
                                            workload):
    """Whether the image is on the host (else pull first) and which digest the workload runs
    were two inspects of the same image per converge; one answers both."""
    settings.CLAWORC_AGENT_IMAGE = agent_image
    start = random.randrange(27000, 27900, 2)
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = start, start + 99
    orch = DockerOrchestrator(config_dir=str(tmp_path / "configs"), privileged=False, init=True,
                              timeout=30)
    name = f"bot-converge-{random.randrange(10**6)}"
    inst = Instance.objects.bulk_create([Instance(display_name=name, name=name)])[0]
    inspected = []
    real = orch.client.api.inspect_image
    try:
        with registry.override(orch):
            if workload == "running":
                assert services.instance_converge(pk=inst.pk, owner="test") == "running"
            orch.client.api.inspect_image = lambda image: inspected.append(image) or real(image)
            assert services.instance_converge(pk=inst.pk, owner="test") == "running"
        assert inspected == [agent_image]
        assert docker_client.containers.get(name).status == "running"
        digests = real(agent_image).get("RepoDigests") or []
        assert Instance.objects.get(pk=inst.pk).running_digest == (
            digests[0].partition("@")[2] if digests else "")
    finally:
        remove_instance_objects(docker_client, name, tmp_path / "configs")
