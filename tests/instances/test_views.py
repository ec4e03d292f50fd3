"""Status pages: who may see them, what they show, and that the list's query count stays flat."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from instances import keys
from instances.models import Activity, Instance, PortAllocation, Setting
from instances.views import PAGE_SIZE, mask_secrets
from orchestrators import registry
from orchestrators.base import Orchestrator, TransientError

pytestmark = pytest.mark.django_db

LIST_URL = "/"


class LogOnly(Orchestrator):
    """Answers logs() (after `delay` seconds), or raises TransientError like a dead daemon."""

    backend_name = "docker"

    def __init__(self, text="", *, fail=None, delay=0.0):
        self.text, self.fail, self.delay = text, fail, delay
        self.asked = []

    def logs(self, name, lines=100):
        self.asked.append((name, lines))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise TransientError(self.fail)
        return self.text

    ping = ensure = start = stop = restart = recreate = delete = status = status_all = (
        volumes_all
    ) = (
        lambda *a, **k: None
    )


@pytest.fixture(autouse=True)
def _fresh_registry():
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_user("ops", password="pw-for-tests-only",
                                                is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_instance"))
    client.force_login(user)
    return user


def make_instance(name, status="running", port=None, **fields):
    fields.setdefault("display_name", name.removeprefix("bot-").replace("-", " ").title())
    instance = Instance.objects.create(name=name, status=status, **fields)
    if port is not None:
        PortAllocation.objects.create(instance=instance, port_chrome=port, port_terminal=port + 1)
    return instance


# --- access -------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [LIST_URL, "/instances/bot-x/"])
def test_anonymous_users_are_sent_to_the_admin_login(client, url):
    make_instance("bot-x")
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={url}"


@pytest.mark.parametrize("url", [LIST_URL, "/instances/bot-x/"])
def test_signed_in_users_who_are_not_staff_are_refused(client, url):
    make_instance("bot-x")
    user = get_user_model().objects.create_user("visitor", password="pw-for-tests-only")
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 403
    assert b"bot-x" not in response.content


@pytest.mark.parametrize("url", [LIST_URL, "/instances/bot-x/"])
def test_staff_without_the_view_permission_are_refused(client, url):
    """The admin gives them 403 on every instance page; so do the status pages."""
    make_instance("bot-x", clawdbot_config={"model": "private-model"})
    user = get_user_model().objects.create_user("no-perms", password="pw-for-tests-only",
                                                is_staff=True)
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 403
    assert b"bot-x" not in response.content and b"private-model" not in response.content


# --- list ---------------------------------------------------------------------------------------

def test_list_shows_instances_vnc_links_and_a_summary(client, staff):
    Setting.set(registry.SETTING_KEY, "docker")
    make_instance("bot-alpha", "running", 30100, display_name="Alpha")
    make_instance("bot-beta", "stopped", 30102, desired_state="stopped")
    make_instance("bot-gamma", "error", status_message="Port 30104 is already in use")
    response = client.get(LIST_URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<meta http-equiv="refresh" content="10">' in html
    assert "3 instances" in html
    assert "1 running" in html and "1 stopped" in html and "1 error" in html
    assert 'href="http://127.0.0.1:30100/vnc.html?autoconnect=true"' in html
    assert 'href="http://127.0.0.1:30101/vnc.html?autoconnect=true"' in html
    # A stopped instance's links would not answer: not offered until it runs again.
    assert "http://127.0.0.1:30102/" not in html and "http://127.0.0.1:30103/" not in html
    assert "30100/30101" in html
    assert "Alpha" in html
    assert "Port 30104 is already in use" in html
    assert "backend: docker" in html
    assert 'href="/instances/bot-alpha/"' in html


def test_list_without_instances_points_to_the_admin(client, staff):
    html = client.get(LIST_URL).content.decode()
    assert "No instances yet" in html
    assert reverse("admin:instances_instance_add") in html
    assert "backend: none" in html


def test_list_never_calls_the_orchestrator(client, staff, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the list page must not call a backend")

    monkeypatch.setattr(registry, "_factory", refuse)
    make_instance("bot-alpha", port=30100)
    assert client.get(LIST_URL).status_code == 200


def _bulk_instances(prefix, count, first_port):
    """Rows only (bulk_create sends no signals, so nothing is reconciled)."""
    Instance.objects.bulk_create(
        Instance(name=f"bot-{prefix}-{i:04d}", display_name=f"{prefix} {i}",
                 status="running" if i % 3 else "stopped")
        for i in range(count)
    )
    ids = Instance.objects.filter(name__startswith=f"bot-{prefix}-").values_list("pk", flat=True)
    PortAllocation.objects.bulk_create(
        PortAllocation(instance_id=pk, port_chrome=first_port + 2 * i,
                       port_terminal=first_port + 2 * i + 1)
        for i, pk in enumerate(ids)
    )


def test_list_query_count_and_page_size_are_constant_at_1000_instances(
    client, staff, django_assert_num_queries, django_assert_max_num_queries
):
    Setting.set(registry.SETTING_KEY, "docker")
    _bulk_instances("few", 10, 40000)
    # session, user, the summary (one aggregate), the filtered count, the page, the backend
    # and the capacity budget's record (two Settings, one query), the user's permissions (user
    # and group), read once to decide which buttons to show, and the liveness banner's two
    # (heartbeats, owed work)
    with django_assert_num_queries(10):
        small = client.get(LIST_URL).content.decode()
    assert small.count('<tr id="instance-') == 10
    _bulk_instances("many", 990, 41000)
    with django_assert_max_num_queries(10):
        response = client.get(LIST_URL)
    html = response.content.decode()
    assert "1000 instances" in html
    running = Instance.objects.filter(status="running").count()
    # The whole fleet, not the page.
    assert f"{running} running" in html and f"{1000 - running} stopped" in html
    assert html.count('<tr id="instance-') == PAGE_SIZE
    # Links only for the instances that run (the others' would not answer).
    shown_running = html.count('data-live-field="status">Running<')
    assert 0 < shown_running < PAGE_SIZE
    assert html.count("vnc.html?autoconnect=true") == 2 * shown_running
    assert f"1–{PAGE_SIZE} of 1000 · page 1 of {1000 // PAGE_SIZE}" in html
    # What a page weighs no longer grows with the fleet: 50 rows (with their live-update
    # markers), whatever N.
    assert len(html) < 80_000
    with django_assert_max_num_queries(10):
        last = client.get(LIST_URL, {"page": 1000 // PAGE_SIZE}).content.decode()
    assert 'id="instance-bot-many-0989"' in last and 'rel="next"' not in last


def test_list_searches_and_filters_like_the_admin(client, staff):
    _bulk_instances("web", 60, 40000)
    make_instance("bot-alpha", "error", display_name="Billing Robot",
                  status_message="Exited with code 1.")
    make_instance("bot-quiet", "stopped", desired_state="stopped")

    html = client.get(LIST_URL, {"q": "billing"}).content.decode()
    assert html.count('<tr id="instance-') == 1 and 'id="instance-bot-alpha"' in html
    assert "62 instances" in html  # the summary still counts the whole fleet
    html = client.get(LIST_URL, {"q": "WEB-005"}).content.decode()
    assert html.count('<tr id="instance-') == 10
    html = client.get(LIST_URL, {"status": "error"}).content.decode()
    assert html.count('<tr id="instance-') == 1 and 'id="instance-bot-alpha"' in html
    html = client.get(LIST_URL, {"desired": "stopped"}).content.decode()
    assert html.count('<tr id="instance-') == 1 and 'id="instance-bot-quiet"' in html
    assert "No instance matches." in client.get(LIST_URL, {"q": "nothing-like-it"}).content.decode()
    # The summary links filter by status.
    assert 'href="?status=error"' in html


def test_list_page_links_keep_the_filter(client, staff):
    _bulk_instances("web", 120, 40000)
    html = client.get(LIST_URL, {"q": "web", "status": "running"}).content.decode()
    assert "1–50 of 80 · page 1 of 2" in html
    assert 'href="?q=web&amp;status=running&amp;page=2"' in html
    second = client.get(LIST_URL, {"q": "web", "status": "running", "page": 2}).content.decode()
    assert "51–80 of 80 · page 2 of 2" in second
    assert 'href="?q=web&amp;status=running&amp;page=1" rel="prev"' in second
    # A page past the end, or not a number, shows the nearest page instead of an error.
    assert client.get(LIST_URL, {"page": "99"}).status_code == 200
    assert "page 1 of 3" in client.get(LIST_URL, {"page": "x"}).content.decode()


def test_list_with_a_bad_filter_says_so_and_shows_everything(client, staff):
    make_instance("bot-alpha")
    html = client.get(LIST_URL, {"status": "sleeping"}).content.decode()
    assert "Select a valid choice" in html and "(filter ignored)" in html
    assert 'id="instance-bot-alpha"' in html


# --- instance page ------------------------------------------------------------------------------

def test_instance_page_shows_resources_volumes_masked_config_activity_and_log(client, staff):
    Setting.set(registry.SETTING_KEY, "docker")
    instance = make_instance(
        "bot-mybot", port=30100, cpu_limit="1500m", memory_limit="3Gi", storage_homebrew="20Gi",
        clawdbot_config={
            "model": "claude-sonnet",
            "gateway": {"authToken": "tok-abcdef123456", "port": 18789},
            "channels": [{"name": "slack", "botKey": "xoxb-1234567890-abcdef"}],
            "note": "sk-ant-api03-secretvaluewxyz",
        },
    )
    keys.set_overrides(instance, {"ANTHROPIC_API_KEY": "sk-ant-instance-override-9876"})
    instance.save()
    Activity.objects.create(instance=instance, instance_name=instance.name, action="start",
                            actor="ops", result="ok", message="container started")
    fake = LogOnly("line one\nhttpd: listening on 6081\n")
    with registry.override(fake):
        response = client.get("/instances/bot-mybot/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<meta http-equiv="refresh"' in html
    assert "1500m" in html and "3Gi" in html and "20Gi" in html
    for suffix in ("clawdbot", "homebrew", "clawd", "chrome"):
        assert f"claworc-bot-mybot-{suffix}" in html
    assert "/home/linuxbrew/.linuxbrew" in html
    assert "claude-sonnet" in html and "18789" in html
    for secret in ("tok-abcdef123456", "xoxb-1234567890-abcdef", "sk-ant-api03-secretvaluewxyz",
                   "sk-ant-instance-override-9876"):
        assert secret not in html
    assert "****3456" in html and "****cdef" in html and "****wxyz" in html
    assert "****9876" in html  # the override, masked
    assert "container started" in html and "ops" in html
    assert "httpd: listening on 6081" in html
    assert fake.asked == [("bot-mybot", 50)]
    assert 'href="http://127.0.0.1:30101/vnc.html?autoconnect=true"' in html


def test_instance_page_names_volumes_as_kubernetes_does(client, staff):
    Setting.set(registry.SETTING_KEY, "kubernetes")
    make_instance("bot-mybot")
    html = client.get("/instances/bot-mybot/").content.decode()
    assert "<code>bot-mybot-clawdbot</code>" in html
    assert "claworc-bot-mybot" not in html
    assert "backend: kubernetes" in html
    assert "Log unavailable: orchestrator_backend is set to kubernetes" in html


def test_a_hanging_daemon_does_not_hang_the_instance_page(client, staff, monkeypatch):
    monkeypatch.setattr("instances.views.ORCHESTRATOR_TIMEOUT", 0.5)
    make_instance("bot-mybot")
    started = time.monotonic()
    with registry.override(LogOnly(delay=20)):
        response = client.get("/instances/bot-mybot/")
    assert time.monotonic() - started < 10
    assert response.status_code == 200
    assert "docker logs did not answer within 0.5 s" in response.content.decode()


def test_a_dead_daemon_is_reported_on_the_instance_page(client, staff):
    make_instance("bot-mybot")
    with registry.override(LogOnly(fail="Docker not available: connection refused")):
        html = client.get("/instances/bot-mybot/").content.decode()
    assert "Log unavailable: Docker not available: connection refused" in html


def test_instance_page_without_a_chosen_backend_does_not_detect(client, staff, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a page request must not run detection")

    monkeypatch.setattr(registry, "_factory", refuse)
    make_instance("bot-mybot")
    html = client.get("/instances/bot-mybot/").content.decode()
    assert "no orchestrator backend chosen yet" in html


def test_unknown_instance_is_404(client, staff):
    assert client.get("/instances/bot-nope/").status_code == 404


def test_mask_secrets_keeps_structure_and_plain_values():
    masked = mask_secrets({"a": 1, "password": "hunter2hunter2", "list": ["ghp_abcdefghijkl"],
                           "nested": {"name": "bob", "api_key": ""}})
    assert masked == {"a": 1, "password": "****ter2", "list": ["****ijkl"],
                      "nested": {"name": "bob", "api_key": ""}}
