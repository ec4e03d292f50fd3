"""Who may see and do what: every URL and every admin action, for each kind of user.

Six users: anonymous, active but not staff, staff without permissions, staff with the view
permissions only (`view_instance` and the other views of instances/, but not
`desktops.use_desktop`), staff with `desktops.use_desktop` only, and a superuser. The status
pages, live data, logs and `/metrics` ask for `view_instance` like the admin's own instance
pages; actions ask for change / delete; the desktops ask for `use_desktop` alone; port pairs are
read-only for everyone and API keys only go through the encrypted page.
"""

import functools
import http.server
import threading

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from desktops import upstream
from desktops.models import DesktopSession
from instances import keys
from instances.models import (
    Activity,
    ImagePull,
    Instance,
    OrphanWorkload,
    PortAllocation,
    Rollout,
    Setting,
)
from tests.desktops.support import free_even_port
from tests.fakes import FakeWorkload

pytestmark = pytest.mark.django_db

USERS = ["anonymous", "visitor", "staff_no_perms", "viewer", "desktop_user", "superuser"]
LOGIN = reverse("admin:login")
NOVNC_PAGE = b"<html><title>noVNC of bot-perm</title></html>"


@pytest.fixture
def novnc_port(tmp_path):
    """A stand-in for the instance's noVNC web server on 127.0.0.1, so that a desktop file
    fetched through the dashboard is really served."""
    (tmp_path / "vnc.html").write_bytes(NOVNC_PAGE)
    port = free_even_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream.forget()
    yield port
    upstream.forget()
    server.shutdown()
    server.server_close()


@pytest.fixture
def world(orch, novnc_port, settings):
    settings.CLAWORC_DESKTOP_ACCESS = "proxy"  # the desktop pages are served by the dashboard
    inst = Instance.objects.create(display_name="Perm", name="bot-perm", status="running")
    ports = PortAllocation.objects.create(instance=inst, port_chrome=novnc_port,
                                          port_terminal=novnc_port + 1)
    Activity.objects.all().delete()
    # Rows of the other admin pages; none names bot-perm, which the action tests look for.
    activity = Activity.objects.create(instance_name="bot-gone", action="create",
                                       message="made")
    Setting.set("orchestrator_backend", "docker")
    setting = Setting.objects.get(key="orchestrator_backend")
    orphan = OrphanWorkload.objects.create(name="bot-lost", backend="docker", status="stopped",
                                           last_seen=timezone.now())
    rollout = Rollout.objects.create(image="agent:perm-2", state="done")
    pull = ImagePull.objects.create(image="agent:perm-2", state="done")
    now = timezone.now()
    session = DesktopSession.objects.create(instance_name="bot-gone", username="someone",
                                            desktop="chrome", last_activity_at=now,
                                            last_seen_at=now, ended_at=now)
    return {"instance": inst, "ports": ports, "setting": setting, "orphan": orphan,
            "activity": activity, "rollout": rollout, "pull": pull, "session": session}


def login_as(client, kind):
    if kind == "anonymous":
        return None
    if kind == "superuser":
        user = User.objects.create_superuser("perm-root", password="pw-perm-long-enough")
    else:
        user = User.objects.create_user(f"perm-{kind}", password="pw-perm-long-enough",
                                        is_staff=kind != "visitor")
        if kind == "viewer":
            user.user_permissions.add(*Permission.objects.filter(
                content_type__app_label="instances", codename__startswith="view_"))
        if kind == "desktop_user":
            user.user_permissions.add(Permission.objects.get(
                content_type__app_label="desktops", codename="use_desktop"))
    client.force_login(user)
    return user


def test_the_kinds_of_user_hold_what_they_claim(client, world):
    viewer = User.objects.get(pk=login_as(client, "viewer").pk)
    assert viewer.has_perm("instances.view_instance")
    assert not viewer.has_perm("desktops.use_desktop")
    desktop_user = User.objects.get(pk=login_as(client, "desktop_user").pk)
    assert desktop_user.has_perm("desktops.use_desktop")
    assert not desktop_user.has_perm("instances.view_instance")


def desktop(kind, path=""):
    return f"/instances/bot-perm/desktop/{kind}/{path}"


def urls(world):
    inst, ports, setting, orphan = (world["instance"], world["ports"], world["setting"],
                                    world["orphan"])
    return {
        "status list": "/",
        "status page": "/instances/bot-perm/",
        "live": reverse("instances:live") + "?names=bot-perm",
        "log follow": reverse("instances:log-follow", args=["bot-perm"]),
        "log download": reverse("instances:log-download", args=["bot-perm"]),
        "metrics": reverse("instances:metrics"),
        "desktop open": reverse("desktops:open", args=["bot-perm", "chrome"]),
        "desktop websocket": reverse("desktops:websocket", args=["bot-perm", "terminal"]),
        "desktop file": reverse("desktops:file", args=["bot-perm", "chrome", "vnc.html"]),
        "admin index": reverse("admin:index"),
        "instance list": reverse("admin:instances_instance_changelist"),
        "instance add": reverse("admin:instances_instance_add"),
        "instance change": reverse("admin:instances_instance_change", args=[inst.pk]),
        "instance delete": reverse("admin:instances_instance_delete", args=[inst.pk]),
        "ports list": reverse("admin:instances_portallocation_changelist"),
        "ports add": reverse("admin:instances_portallocation_add"),
        "ports change": reverse("admin:instances_portallocation_change", args=[ports.pk]),
        "ports delete": reverse("admin:instances_portallocation_delete", args=[ports.pk]),
        "settings list": reverse("admin:instances_setting_changelist"),
        "settings add": reverse("admin:instances_setting_add"),
        "settings change": reverse("admin:instances_setting_change", args=[setting.pk]),
        "activity list": reverse("admin:instances_activity_changelist"),
        "activity change": reverse("admin:instances_activity_change",
                                   args=[world["activity"].pk]),
        "orphans list": reverse("admin:instances_orphanworkload_changelist"),
        "orphan change": reverse("admin:instances_orphanworkload_change", args=[orphan.pk]),
        "rollouts list": reverse("admin:instances_rollout_changelist"),
        "rollout change": reverse("admin:instances_rollout_change", args=[world["rollout"].pk]),
        "rollout add": reverse("admin:instances_rollout_add"),
        "pulls list": reverse("admin:instances_imagepull_changelist"),
        "pull change": reverse("admin:instances_imagepull_change", args=[world["pull"].pk]),
        "api keys": reverse("admin:instances_api_keys"),
        "desktop sessions list": reverse("admin:desktops_desktopsession_changelist"),
        "desktop session change": reverse("admin:desktops_desktopsession_change",
                                          args=[world["session"].pk]),
    }


# Expected GET status per user kind; "login" is a redirect to the admin login.
#: Pages outside the admin that show instances: `view_instance`, as the admin's instance pages.
INSTANCE_PAGES = {"status list", "status page", "live", "log follow", "log download"}
#: The dashboard's desktop proxy: `desktops.use_desktop`, nothing else.
DESKTOP_PAGES = {"desktop open": 302, "desktop websocket": 302, "desktop file": 200}
OPEN_TO_VIEWERS = INSTANCE_PAGES | {
    "metrics", "admin index", "instance list", "instance change", "ports list", "ports change",
    "settings list", "settings change", "activity list", "activity change", "orphans list",
    "orphan change", "rollouts list", "rollout change", "pulls list", "pull change", "api keys"}
# Port pairs are read-only for everyone; rollouts start from the instance list's action.
SUPERUSER_REFUSED = {"ports add", "ports delete", "rollout add"}


def expected(kind, page):
    if page in DESKTOP_PAGES:
        if kind == "anonymous":
            return "login"
        return DESKTOP_PAGES[page] if kind in ("desktop_user", "superuser") else 403
    if page == "metrics":  # a scraper is told to authenticate, not sent to a login page
        if kind == "anonymous":
            return 401
        return 200 if kind in ("viewer", "superuser") else 403
    if kind == "anonymous":
        return "login"
    if kind == "visitor":
        return 403 if page in INSTANCE_PAGES else "login"
    if kind in ("staff_no_perms", "desktop_user"):
        return 200 if page == "admin index" else 403
    if kind == "viewer":
        return 200 if page in OPEN_TO_VIEWERS else 403
    return 403 if page in SUPERUSER_REFUSED else 200


def body(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


@pytest.mark.parametrize("kind", USERS)
def test_every_url_for_every_kind_of_user(client, world, kind, orch):
    orch.workloads["bot-perm"] = FakeWorkload(spec=None, logs="agent of bot-perm started\n")
    login_as(client, kind)
    seen = {}
    for page, url in urls(world).items():
        response = client.get(url)
        content = body(response)
        if response.status_code == 302 and response["Location"].startswith(LOGIN):
            seen[page] = "login"
        else:
            seen[page] = response.status_code
        # Whoever is refused learns nothing of the instance.
        if seen[page] in ("login", 401, 403):
            assert b"bot-perm" not in content, page
            assert b"claworc_instances" not in content, page
        elif page in INSTANCE_PAGES:
            assert b"bot-perm" in content, page
        elif page == "metrics":
            assert b"claworc_instances{" in content
        elif page == "desktop file":
            assert content == NOVNC_PAGE
        elif page in DESKTOP_PAGES:
            assert response["Location"].startswith("vnc.html?autoconnect=true"), page
    assert seen == {page: expected(kind, page) for page in seen}


def test_health_is_open_to_everyone(client, world):
    # Details of /health are tested in tests/test_health.py.
    assert client.get("/health").status_code == 200


ACTIONS = {
    # action: (permission it needs, what the row looks like after it ran)
    "start_instances": "change",
    "stop_instances": "change",
    "restart_instances": "change",
    "recreate_instances": "change",
    "refresh_instances": "view",
    "delete_keeping_volumes": "delete",
    "delete_with_volumes": "delete",
}


@pytest.mark.parametrize("kind", USERS)
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_for_every_kind_of_user(client, world, kind, action, orch):
    inst = world["instance"]
    # A state from which the action is not a no-op.
    desired = "running" if action == "stop_instances" else "stopped"
    Instance.objects.filter(pk=inst.pk).update(status="error", desired_state=desired)
    login_as(client, kind)
    response = client.post(reverse("admin:instances_instance_changelist"),
                           {"action": action, "_selected_action": [inst.pk], "confirm": "yes"})
    allowed = kind == "superuser" or (kind == "viewer" and ACTIONS[action] == "view")
    recorded = Activity.objects.filter(instance_name=inst.name).exists()
    still_there = Instance.objects.filter(pk=inst.pk).first()
    if allowed:
        assert recorded, response.content[:500]
        if action.startswith("delete"):
            # Two steps: the row stays `deleting` until the worker's teardown.
            assert still_there is not None and still_there.status == "deleting"
    else:
        assert not recorded
        assert still_there is not None
        assert (still_there.desired_state, still_there.restart_requested,
                still_there.recreate_requested) == (desired, 0, 0)
        if kind in ("anonymous", "visitor"):
            assert response["Location"].startswith(LOGIN)
        elif kind in ("staff_no_perms", "desktop_user"):
            assert response.status_code == 403
    assert orch.calls == []  # nothing reaches a backend inside a request


@pytest.mark.parametrize("kind", USERS)
@pytest.mark.parametrize("action", ["start", "stop", "restart", "recreate"])
def test_the_status_pages_action_endpoint_for_every_kind_of_user(client, world, kind, action,
                                                                  orch):
    """The one-click buttons of the status pages POST here: change permission only."""
    inst = world["instance"]
    desired = "running" if action == "stop" else "stopped"
    Instance.objects.filter(pk=inst.pk).update(status="error", desired_state=desired)
    login_as(client, kind)
    response = client.post(reverse("instances:action", args=[inst.name]),
                           {"action": action, "next": "/"})
    row = Instance.objects.get(pk=inst.pk)
    recorded = Activity.objects.filter(instance_name=inst.name).exists()
    if kind == "superuser":
        assert response.status_code == 302 and response["Location"] == "/"
        assert recorded
    else:
        assert not recorded
        assert (row.desired_state, row.restart_requested, row.recreate_requested) == (
            desired, 0, 0)
        if kind == "anonymous":
            assert response.status_code == 302 and response["Location"].startswith(LOGIN)
        else:  # the view permission lets one see the buttons' page, not press them
            assert response.status_code == 403
            assert b"bot-perm" not in response.content
    assert orch.calls == []


@pytest.mark.parametrize("kind", USERS)
def test_the_global_api_keys_page_takes_keys_only_from_who_may_change_settings(
        client, world, kind):
    login_as(client, kind)
    value = "sk-ant-perm-0123456789abcdef"
    response = client.post(reverse("admin:instances_api_keys"),
                           {"key_anthropic_api_key": value})
    stored = Setting.objects.filter(key__startswith=keys.GLOBAL_PREFIX).exists()
    assert stored == (kind == "superuser")
    assert value.encode() not in response.content
    if kind in ("anonymous", "visitor"):
        assert response.status_code == 302 and response["Location"].startswith(LOGIN)
    elif kind == "superuser":
        assert response.status_code == 302
    else:  # the viewer may read the page (view_setting), not change it
        assert response.status_code == 403


def test_no_one_can_edit_a_port_pair(client, world):
    login_as(client, "superuser")
    ports = world["ports"]
    url = reverse("admin:instances_portallocation_change", args=[ports.pk])
    client.post(url, {"instance": world["instance"].pk, "port_chrome": "22",
                      "port_terminal": "23"})
    client.post(reverse("admin:instances_portallocation_delete", args=[ports.pk]),
                {"post": "yes"})
    client.post(reverse("admin:instances_portallocation_add"),
                {"instance": world["instance"].pk, "port_chrome": "70000",
                 "port_terminal": "70001"})
    assert list(PortAllocation.objects.values_list("port_chrome", "port_terminal")) == [
        (ports.port_chrome, ports.port_terminal)]
    page = client.get(url).content.decode()
    assert 'name="port_chrome"' not in page  # shown, not editable


def test_api_keys_cannot_be_added_as_plain_settings(client, world):
    login_as(client, "superuser")
    response = client.post(reverse("admin:instances_setting_add"),
                           {"key": "api_key:OPENAI_API_KEY", "value": "sk-plain-text-1234567"})
    assert response.status_code == 200
    assert "Global API keys page" in response.content.decode()
    assert not Setting.objects.filter(key__startswith=keys.GLOBAL_PREFIX).exists()
    # Nor by renaming an existing row.
    setting = world["setting"]
    client.post(reverse("admin:instances_setting_change", args=[setting.pk]),
                {"key": "api_key:OPENAI_API_KEY", "value": "sk-plain-text-1234567"})
    assert not Setting.objects.filter(key__startswith=keys.GLOBAL_PREFIX).exists()


def test_the_backend_setting_takes_only_a_backend(client, world):
    login_as(client, "superuser")
    setting = world["setting"]
    response = client.post(reverse("admin:instances_setting_change", args=[setting.pk]),
                           {"key": "orchestrator_backend", "value": "podman"})
    assert "orchestrator_backend is one of" in response.content.decode()
    assert Setting.get_str("orchestrator_backend") == "docker"
