"""A port pair taken outside Claworc (PortConflict) moves the instance to the next free pair, a
few times per converge at most, on the real Docker daemon and against the kmock emulator."""

import contextlib
import random
import socket

import pytest

from instances import services
from instances.models import Activity, Instance, PortAllocation
from instances.services.ports import MAX_PORT_MOVES
from orchestrators import registry
from orchestrators.docker import DockerOrchestrator
from orchestrators.kubernetes import KubernetesOrchestrator
from tests import kube_support
from tests.docker_support import remove_instance_objects

pytestmark = pytest.mark.django_db
kube_api = kube_support.kube_api


def _instance(name: str) -> Instance:
    """A row just added, its converge owed (as the add form leaves it)."""
    return Instance.objects.bulk_create([Instance(
        display_name=name, name=name, status="creating", generation=1, observed_generation=0)])[0]


def _moves(name: str) -> list[str]:
    return list(Activity.objects.filter(instance_name=name, action="ports").order_by("id")
                .values_list("message", flat=True))


@contextlib.contextmanager
def _listening(*ports: int):
    """Something outside Claworc listening on `ports` of every address of the host."""
    with contextlib.ExitStack() as stack:
        for port in ports:
            holder = stack.enter_context(socket.socket())
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind(("0.0.0.0", port))
            holder.listen()
        yield


def _free_block(size: int) -> int:
    # Below the kernel's ephemeral range (32768-), apart from the other suites' ranges.
    for _ in range(50):
        start = random.randrange(26000, 26980 - size, 2)
        ports = range(start, start + size)
        try:
            with _listening(*ports):
                return start
        except OSError:
            continue
    raise AssertionError("no free block of ports in 26000-26999")


@pytest.fixture
def docker_range(docker_client, agent_image, tmp_path, settings):
    start = _free_block(12)
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = start, start + 11
    settings.CLAWORC_AGENT_IMAGE = agent_image
    orch = DockerOrchestrator(config_dir=str(tmp_path / "configs"), privileged=False, init=True,
                              timeout=30)
    made: list[str] = []
    with registry.override(orch):
        yield start, made
    for name in made:
        remove_instance_objects(docker_client, name, tmp_path / "configs")


@pytest.mark.docker
def test_a_pair_taken_on_the_docker_host_moves_the_instance_to_the_next_free_one(
        docker_client, docker_range):
    start, made = docker_range
    inst = _instance(f"bot-t11-moved-{random.randrange(10**6)}")
    made.append(inst.name)

    with _listening(start + 1):  # the terminal port of the pair it is given first
        assert services.instance_converge(pk=inst.pk, owner="t11") == "running"

    assert _moves(inst.name) == [
        f"Ports {start}/{start + 1} were taken outside Claworc; moved to "
        f"{start + 2}/{start + 3}."]
    assert list(PortAllocation.objects.values_list("instance__name", "port_chrome",
                                                   "port_terminal")) == [
        (inst.name, start + 2, start + 3)]
    container = docker_client.containers.get(inst.name)
    assert container.status == "running"
    bindings = container.attrs["HostConfig"]["PortBindings"]
    assert (bindings["6081/tcp"][0]["HostPort"], bindings["6082/tcp"][0]["HostPort"]) == (
        str(start + 2), str(start + 3))
    inst.refresh_from_db()
    assert (inst.status, inst.observed_generation) == ("running", 1)


@pytest.mark.docker
def test_a_range_full_of_outside_listeners_ends_in_a_clear_error_not_a_loop(
        docker_client, docker_range):
    start, made = docker_range
    inst = _instance(f"bot-t11-full-{random.randrange(10**6)}")
    made.append(inst.name)

    with _listening(*(start + 2 * i for i in range(MAX_PORT_MOVES + 1))):
        assert services.instance_converge(pk=inst.pk, owner="t11") == "error"

    assert len(_moves(inst.name)) == MAX_PORT_MOVES
    inst.refresh_from_db()
    assert inst.status == "error"
    assert f"Port {start + 2 * MAX_PORT_MOVES} is already in use on the Docker host" in (
        inst.status_message)
    assert (f"moved {inst.name} to another pair {MAX_PORT_MOVES} times and each was taken "
            "outside Claworc too") in inst.status_message
    assert docker_client.containers.list(all=True, filters={"name": inst.name}) == []
    assert PortAllocation.objects.count() == 1


def test_a_node_port_taken_in_the_cluster_moves_the_instance(kube_api, settings):
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 30100, 30199
    orch = KubernetesOrchestrator(api_client=kube_api.api_client(), namespace="claworc",
                                  timeout=5)
    inst = _instance("bot-t11-k8s")
    # What kube-apiserver answers when another Service holds NodePort 30101.
    kube_api.inject("POST", "/services", 422, reason="Invalid", times=1, message=(
        'Service "bot-t11-k8s-vnc" is invalid: spec.ports[1].nodePort: Invalid value: 30101: '
        "provided port is already allocated"), details={
        "name": "bot-t11-k8s-vnc", "kind": "Service", "causes": [{
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 30101: provided port is already allocated",
            "field": "spec.ports[1].nodePort"}]})

    with registry.override(orch):
        services.instance_converge(pk=inst.pk, owner="t11")

    assert _moves(inst.name) == [
        "Ports 30100/30101 were taken outside Claworc; moved to 30102/30103."]
    service = kube_api.stored("v1/services", "bot-t11-k8s-vnc")
    assert sorted(p["nodePort"] for p in service["spec"]["ports"]) == [30102, 30103]
    assert kube_api.stored("apps/v1/deployments", "bot-t11-k8s") is not None
    assert list(PortAllocation.objects.values_list("port_chrome", "port_terminal")) == [
        (30102, 30103)]
    inst.refresh_from_db()
    assert inst.status != "error" and inst.observed_generation == 1
