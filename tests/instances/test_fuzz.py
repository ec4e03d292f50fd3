"""Bad input at the door: every admin form and query string below gets a normal page, never a
server error, and a refused post leaves nothing behind (no row, no port pair, no activity, no
task, no backend call).

The same module runs on PostgreSQL (test_fuzz_on_postgresql, in a process of its own), where
strings are stricter (a NUL character is refused by the server itself).
"""

import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from instances.models import Activity, Instance, PortAllocation, Setting
from orchestrators import registry
from orchestrators.base import HostCapacity
from tests.html_forms import form_inputs

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
ADD = reverse("admin:instances_instance_add")
CHANGELIST = reverse("admin:instances_instance_changelist")
DEEP_LIST = "[" * 900 + "]" * 900
DEEP_OBJECT = '{"a":' * 900 + "1" + "}" * 900

# field -> values that must be refused with an error on that field
BAD = {
    "name": ["9bot", "Bot", "-bot", "bot-", "a" * 60, "a b", "bot_x", "bot\x00x", "bötli",
             "../etc", "bot.x"],
    "display_name": ["\x00", "x" * 101],
    "cpu_request": ["0", "-1", "1e3", "abc", "", "\x00", "1" * 20, "3000m"],
    "cpu_limit": ["0", "5m", "9m", "3", "100000", "abc", "", "0.001"],
    "memory_request": ["0", "-1Gi", "1Zi", "1.5.5Gi", "", "5Gi"],
    "memory_limit": ["0", "1Ki", "5Mi", "6000000", "-1Gi", "x"],
    "storage_clawdbot": ["0", "-5Gi", "0Gi", "abc", "0.0000001"],
    "storage_chrome": ["", "1 Gi"],
    "image": ["a b c", "team/UPPER", "x:", ":tag", "a@sha256:zz", "a" * 300, "bad\x00image",
              "repo:tag:tag", "http://registry/x"],
    "clawdbot_config": ["null", "[]", '"a string"', "1", "true", '{"a": NaN}',
                        '{"a": Infinity}', '{"a": -Infinity}', DEEP_LIST, DEEP_OBJECT, "{",
                        '{"a": "\\u0000"}', '{"\\u0000": 1}', "{'a': 1}",
                        '{"big": "' + "x" * 300_000 + '"}'],
    "desired_state": ["bogus", ""],
    "key_openai_api_key": ["has space", "tab\there", "nul\x00", "x" * 1001],
}

# Odd but valid: accepted, and stored as given.
GOOD = {
    "image": ["busybox", "registry.example.com:5000/team/agent:v1.2",
              "glukw/openclaw-vnc-chrome@sha256:" + "a" * 64, "localhost/a__b-c.d:TAG_1"],
    "cpu_limit": ["10m", "2", "1.5"],
    "memory_limit": ["6Mi", "8Gi"],
    "name": ["bot-9", "a", "x" * 59],
    "clawdbot_config": ['{"a": {"b": [1, 2.5, null, "x"]}}', ""],
}


@pytest.fixture
def admin_client(client, orch):
    user = User.objects.create_superuser("fuzz-root", password="pw-fuzz-long-enough")
    client.force_login(user)
    # Docker with a 2-CPU host, as detection records it.
    Setting.set(registry.SETTING_KEY, "docker")
    registry.store_capacity("docker", HostCapacity(per_instance_max={"cpu": Decimal(2)},
                                                   host=True))
    return client


def _valid_add_data(client):
    data = form_inputs(client.get(ADD).content.decode()).data
    data.update(display_name="Fuzz Base", name="", clawdbot_config="{}",
                cpu_request="500m", cpu_limit="2", memory_request="1Gi", memory_limit="4Gi")
    data.pop("_addanother", None)
    data.pop("_continue", None)
    return data


def _counts():
    return (Instance.objects.count(), PortAllocation.objects.count(), Activity.objects.count(),
            Setting.objects.count())


def _refused(response, field):
    assert response.status_code == 200, response.status_code
    form = response.context["adminform"].form
    assert field in form.errors, (field, form.errors)


@pytest.mark.parametrize("field", sorted(BAD))
def test_add_form_refuses_bad_values_with_a_field_error_and_makes_nothing(
        admin_client, orch, field, django_capture_on_commit_callbacks):
    base = _valid_add_data(admin_client)
    before = _counts()
    for value in BAD[field]:
        data = {**base, field: value}
        with django_capture_on_commit_callbacks() as callbacks:
            response = admin_client.post(ADD, data)
        _refused(response, field)
        assert _counts() == before, value[:40]
        assert callbacks == [] and orch.calls == []


@pytest.mark.parametrize("field", sorted(GOOD))
def test_odd_but_valid_values_are_accepted(admin_client, orch, field):
    # Requests at their smallest, so that any limit above Docker's minimum fits.
    base = {**_valid_add_data(admin_client), "cpu_request": "1m", "memory_request": "1Mi"}
    for i, value in enumerate(GOOD[field]):
        response = admin_client.post(ADD, {**base, field: value, "display_name": f"good {i}"})
        assert response.status_code == 302, response.context["adminform"].form.errors
        stored = getattr(Instance.objects.get(display_name=f"good {i}"), field)
        assert stored == ({} if value == "" else __import__("json").loads(value)
                          if field == "clawdbot_config" else value)
        Instance.objects.all().delete()


# The name and the desired state are read-only on the change form (Start and Stop change the
# latter): what is posted for them is ignored, not refused.
@pytest.mark.parametrize("field", sorted(set(BAD) - {"name", "desired_state"}))
def test_change_form_refuses_bad_values_and_changes_nothing(
        admin_client, orch, field, django_capture_on_commit_callbacks):
    inst = Instance.objects.create(display_name="Fuzz Change", name="bot-fuzz-change",
                                   clawdbot_config={"model": "m"})
    url = reverse("admin:instances_instance_change", args=[inst.pk])
    base = form_inputs(admin_client.get(url).content.decode()).data
    before = (_counts(), Instance.objects.filter(pk=inst.pk).values().get())
    for value in BAD[field]:
        with django_capture_on_commit_callbacks() as callbacks:
            response = admin_client.post(url, {**base, field: value})
        _refused(response, field)
        after = Instance.objects.filter(pk=inst.pk).values().get()
        assert (_counts(), after) == before, value[:40]
        assert callbacks == [] and orch.calls == []


QUERY_STRINGS = [
    "status__exact=%00", "q=%00", "q=bot%00", "%00=1", "desired_state__exact=%00x",
    "status__exact=bogus", "o=99", "o=-1.x", "p=-1", "p=999999", "p=x", "all=%00",
    "status__exact=running&status__exact=%00", "q=" + "x" * 5000, "e=1%00",
    "name__in=%00", "ports__port_chrome__gte=abc", "_changelist_filters=%00",
]


@pytest.mark.parametrize("model", ["instance", "activity", "orphanworkload", "setting",
                                   "portallocation"])
def test_odd_changelist_query_strings_give_a_normal_page(admin_client, model):
    Instance.objects.create(display_name="Fuzz Query", name="bot-fuzz-query")
    url = reverse(f"admin:instances_{model}_changelist")
    for query in QUERY_STRINGS:
        response = admin_client.get(f"{url}?{query}", follow=True)
        assert response.status_code < 500, query
        # A lookup the admin does not offer is Django's 400 page, as it should be.
        expected = 400 if "__gte" in query and model == "instance" else 200
        assert response.status_code == expected, (query, response.status_code)


def test_odd_status_page_queries_give_a_normal_page(admin_client):
    Instance.objects.create(display_name="Fuzz Status", name="bot-fuzz-status")
    for query in QUERY_STRINGS:
        assert admin_client.get(f"/?{query}").status_code == 200, query
    for name in ("bot-missing", "bot-fuzz-status"):
        assert admin_client.get(f"/instances/{name}/?x=%00").status_code in (200, 404)


def test_global_keys_form_refuses_bad_values_and_stores_nothing(admin_client, orch):
    url = reverse("admin:instances_api_keys")
    for value in BAD["key_openai_api_key"]:
        response = admin_client.post(url, {"key_openai_api_key": value})
        assert response.status_code == 200
        assert "key_openai_api_key" in response.context["form"].errors
        assert value not in response.content.decode()
    assert not Setting.objects.filter(key__startswith="api_key:").exists()


@pytest.mark.postgres
@pytest.mark.slow
def test_fuzz_on_postgresql(postgres_url):
    """This module again, on PostgreSQL (a test database of its own, made and dropped by
    pytest-django)."""
    name = f"claworc_fuzz_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": f"{postgres_url}{name}"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(Path(__file__).relative_to(ROOT)), "-q",
         "-p", "no:cacheprovider", "-m", "not postgres", "-x"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
