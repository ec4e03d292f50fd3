"""Who may see and do what: every URL and every admin action, for each kind of user.

Five users: anonymous, active but not staff, staff without permissions, staff with the view
permissions only, and a superuser. The status pages ask for `view_instance` like the admin's own
instance pages; actions ask for change / delete; port pairs are read-only for everyone and API
keys only go through the encrypted page.
"""

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from instances import keys
from instances.models import Activity, Instance, OrphanWorkload, PortAllocation, Setting

pytestmark = pytest.mark.django_db

USERS = ["anonymous", "visitor", "staff_no_perms", "viewer", "superuser"]
LOGIN = reverse("admin:login")


@pytest.fixture
def world(orch):
    inst = Instance.objects.create(display_name="Perm", name="bot-perm", status="running")
    ports = PortAllocation.objects.create(instance=inst, port_chrome=32100, port_terminal=32101)
    Activity.objects.all().delete()
    Setting.set("orchestrator_backend", "docker")
    setting = Setting.objects.get(key="orchestrator_backend")
    from django.utils import timezone

    orphan = OrphanWorkload.objects.create(name="bot-lost", backend="docker", status="stopped",
                                           last_seen=timezone.now())
    return {"instance": inst, "ports": ports, "setting": setting, "orphan": orphan}


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
    client.force_login(user)
    return user


def urls(world):
    inst, ports, setting, orphan = (world["instance"], world["ports"], world["setting"],
                                    world["orphan"])
    return {
        "status list": "/",
        "status page": "/instances/bot-perm/",
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
        "orphans list": reverse("admin:instances_orphanworkload_changelist"),
        "orphan change": reverse("admin:instances_orphanworkload_change", args=[orphan.pk]),
        "api keys": reverse("admin:instances_api_keys"),
    }


# Expected GET status per user kind; "login" is a redirect to the admin login.
OPEN_TO_VIEWERS = {"status list", "status page", "admin index", "instance list",
                   "instance change", "ports list", "ports change", "settings list",
                   "settings change", "activity list", "orphans list", "orphan change",
                   "api keys"}
SUPERUSER_REFUSED = {"ports add", "ports delete"}  # port pairs are read-only for everyone


def expected(kind, page):
    status_page = page.startswith("status")
    if kind == "anonymous":
        return "login"
    if kind == "visitor":
        return 403 if status_page else "login"
    if kind == "staff_no_perms":
        return 200 if page == "admin index" else 403
    if kind == "viewer":
        return 200 if page in OPEN_TO_VIEWERS else 403
    return 403 if page in SUPERUSER_REFUSED else 200


@pytest.mark.parametrize("kind", USERS)
def test_every_url_for_every_kind_of_user(client, world, kind):
    login_as(client, kind)
    seen = {}
    for page, url in urls(world).items():
        response = client.get(url)
        if response.status_code == 302 and response["Location"].startswith(LOGIN):
            seen[page] = "login"
        else:
            seen[page] = response.status_code
        # Whoever is refused learns nothing of the instance.
        if seen[page] in ("login", 403):
            assert b"bot-perm" not in response.content, page
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
        elif kind == "staff_no_perms":
            assert response.status_code == 403
    assert orch.calls == []  # nothing reaches a backend inside a request


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
        (32100, 32101)]
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
