"""Access modes: which links the pages show, and what each backend publishes on the node."""

import pytest

from desktops.selectors import access_description, desktop_links
from orchestrators import kubernetes as k8s
from orchestrators.base import DesktopAccess, InstanceSpec
from orchestrators.docker import DockerOrchestrator, container_create_kwargs

from .conftest import make_instance

SPEC = InstanceSpec(name="bot-a", image="agent:1", port_chrome=30100, port_terminal=30101)


def kwargs(access, network=None):
    return container_create_kwargs(SPEC, "/cfg/bot-a/clawdbot.json", privileged=False,
                                   init=True, desktop_access=access, network=network)


def test_ports_mode_publishes_on_every_address_like_the_seed():
    made = kwargs(DesktopAccess.PORTS)
    assert made["ports"] == {"6081/tcp": 30100, "6082/tcp": 30101}
    assert "network" not in made


def test_both_mode_publishes_and_joins_the_shared_network():
    made = kwargs(DesktopAccess.BOTH, "claworc-desktops")
    assert made["ports"] == {"6081/tcp": 30100, "6082/tcp": 30101}
    assert made["network"] == "claworc-desktops"


def test_proxy_mode_without_a_network_binds_to_loopback_only():
    made = kwargs(DesktopAccess.PROXY)
    assert made["ports"] == {"6081/tcp": ("127.0.0.1", 30100), "6082/tcp": ("127.0.0.1", 30101)}


def test_proxy_mode_on_a_shared_network_publishes_nothing():
    made = kwargs(DesktopAccess.PROXY, "claworc-desktops")
    assert "ports" not in made
    assert made["network"] == "claworc-desktops"


def test_changing_the_mode_changes_the_spec_hash_so_the_container_is_recreated():
    hashes = {kwargs(mode)["labels"]["claworc.spec-hash"] for mode in DesktopAccess}
    assert len(hashes) == 2  # ports and both publish the same way without a network


def test_docker_desktop_address_without_network_is_the_published_port():
    orch = DockerOrchestrator(config_dir="/tmp", desktop_access="proxy",
                              desktop_host="127.0.0.1")
    assert orch.desktop_address("bot-a", 6081, 30100) == ("127.0.0.1", 30100)


@pytest.mark.parametrize(("access", "kind", "node_ports"), [
    ("ports", "NodePort", [30100, 30101]),
    ("both", "NodePort", [30100, 30101]),
    ("proxy", "ClusterIP", [None, None]),
])
def test_kubernetes_service_type_follows_the_mode(access, kind, node_ports):
    svc = k8s.build_service(SPEC, namespace="claworc", desktop_access=DesktopAccess(access))
    assert svc["spec"]["type"] == kind
    assert [p.get("nodePort") for p in svc["spec"]["ports"]] == node_ports
    assert [p["port"] for p in svc["spec"]["ports"]] == [6081, 6082]


def test_kubernetes_desktop_address_is_the_cluster_service_in_proxy_mode():
    orch = k8s.KubernetesOrchestrator.__new__(k8s.KubernetesOrchestrator)
    orch.namespace, orch.node_host = "claworc", "10.0.0.5"
    orch.desktop_access = DesktopAccess.PROXY
    assert orch.desktop_address("bot-a", 6081, 30100) == ("bot-a-vnc.claworc.svc", 6081)
    orch.desktop_access = DesktopAccess.BOTH
    assert orch.desktop_address("bot-a", 6082, 30101) == ("10.0.0.5", 30101)


@pytest.mark.django_db
@pytest.mark.parametrize(("mode", "expected"), [
    ("ports", [("chrome", "port"), ("terminal", "port")]),
    ("both", [("chrome", "dashboard"), ("terminal", "dashboard"), ("chrome", "port"),
              ("terminal", "port")]),
    ("proxy", [("chrome", "dashboard"), ("terminal", "dashboard")]),
])
def test_links_follow_the_mode(settings, desk_user, mode, expected):
    settings.CLAWORC_DESKTOP_ACCESS = mode
    instance = make_instance("bot-links")
    links = desktop_links(instance, user=desk_user)
    assert [(link.desktop, link.via) for link in links] == expected
    urls = {link.url for link in links}
    if mode != "ports":
        assert "/instances/bot-links/desktop/chrome/" in urls
    if mode != "proxy":
        assert "http://127.0.0.1:30100/vnc.html?autoconnect=true" in urls


@pytest.mark.django_db
def test_proxy_links_are_left_out_for_a_user_without_the_permission(settings, plain_user):
    settings.CLAWORC_DESKTOP_ACCESS = "both"
    links = desktop_links(make_instance("bot-nolink"), user=plain_user)
    assert [link.via for link in links] == ["port", "port"]


def test_each_mode_says_which_way_in_is_on():
    assert "without a login" in access_description(DesktopAccess.PORTS)
    assert "only through this dashboard" in access_description(DesktopAccess.PROXY)
    assert "also published" in access_description(DesktopAccess.BOTH)


def test_a_wrong_mode_stops_start_up_naming_the_variable(monkeypatch):
    import environ
    from django.core.exceptions import ImproperlyConfigured

    from claworc_site.config import DESKTOP_ACCESS_MODES, env_choice

    with pytest.raises(ImproperlyConfigured, match="CLAWORC_DESKTOP_ACCESS must be one of"):
        monkeypatch.setenv("CLAWORC_DESKTOP_ACCESS", "open")
        env_choice(environ.Env(), "CLAWORC_DESKTOP_ACCESS", "ports", DESKTOP_ACCESS_MODES)
