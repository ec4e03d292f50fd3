"""Validation at the door, from code (services.instance_create / full_clean) as from the admin,
and the config's secrets shown masked in the admin form."""

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.urls import reverse

from instances import keys, services
from instances.models import Instance, Setting
from orchestrators import registry
from orchestrators.base import HostCapacity
from tests.html_forms import form_inputs

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _errors(**fields) -> dict:
    fields.setdefault("display_name", "Door")
    with pytest.raises(ValidationError) as err:
        services.instance_create(**fields)
    assert not Instance.objects.exists()
    return err.value.message_dict


@pytest.mark.parametrize(("fields", "field", "fragment"), [
    ({"cpu_request": "3", "cpu_limit": "2"}, "cpu_request", "more than the limit 2"),
    ({"memory_request": "8Gi", "memory_limit": "4Gi"}, "memory_request",
     "more than the limit 4Gi"),
    ({"memory_request": "1Mi", "memory_limit": "5Mi"}, "memory_limit", "minimum of 6Mi"),
    ({"cpu_request": "1m", "cpu_limit": "5m"}, "cpu_limit", "minimum of 10m"),
    ({"storage_clawd": "0"}, "storage_clawd", "more than zero"),
    ({"name": "9bot"}, "name", "start with a letter"),
    ({"image": "a b c"}, "image", "Not an image reference"),
    ({"clawdbot_config": None}, "clawdbot_config", "got null"),
    ({"clawdbot_config": []}, "clawdbot_config", "got a list"),
    ({"clawdbot_config": "text"}, "clawdbot_config", "not valid JSON"),
    ({"clawdbot_config": {"a": float("nan")}}, "clawdbot_config", "NaN or Infinity"),
    ({"clawdbot_config": {"a": "\x00"}}, "clawdbot_config", "NUL"),
])
def test_bad_values_from_code_are_refused_naming_the_field(fields, field, fragment):
    errors = _errors(**fields)
    assert field in errors, errors
    assert fragment in " ".join(errors[field])


def test_a_config_nested_too_deep_is_refused_without_recursing():
    config = leaf = {}
    for _ in range(5000):  # deeper than Python's recursion limit
        leaf["a"] = {}
        leaf = leaf["a"]
    errors = _errors(clawdbot_config=config)
    assert "nested more than 32 levels" in errors["clawdbot_config"][0]


def test_cpu_limit_above_the_docker_hosts_cpus_is_refused_with_its_count():
    Setting.set(registry.SETTING_KEY, "docker")
    registry.store_capacity("docker", HostCapacity(per_instance_max={"cpu": Decimal(2)},
                                                   host=True))
    errors = _errors(cpu_limit="3")
    assert errors["cpu_limit"] == ["3 is more than the Docker host has: 2 CPUs."]
    services.instance_create(display_name="Fits", cpu_limit="2")
    # On Kubernetes the cluster schedules: no host bound applies.
    Setting.set(registry.SETTING_KEY, "kubernetes")
    services.instance_create(display_name="Big", cpu_limit="64", cpu_request="1")


@pytest.mark.docker
def test_detection_records_the_docker_hosts_cpu_count(docker_client, no_cluster):
    detection = registry.detect(persist=True)
    assert detection.backend == "docker"
    assert registry.host_cpus() == docker_client.info()["NCPU"]


# --- Claworc's own settings ---------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("CLAWORC_TASK_TIME_LIMIT", "-5", "CLAWORC_TASK_TIME_LIMIT must be at least 5, got -5"),
    ("CLAWORC_TASK_TIME_LIMIT", "0", "must be at least 5"),
    ("CLAWORC_RECONCILE_INTERVAL", "0", "CLAWORC_RECONCILE_INTERVAL must be at least 1"),
    ("CLAWORC_CREATING_TIMEOUT", "-1", "CLAWORC_CREATING_TIMEOUT must be at least 10"),
    ("CLAWORC_RETENTION_DAYS", "0", "CLAWORC_RETENTION_DAYS must be at least 1"),
])
def test_claworcs_own_settings_have_minimums(name, value, fragment):
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "claworc_site.settings",
             name: value},
        capture_output=True, text=True, timeout=300)  # a loaded machine starts Python slowly
    assert done.returncode != 0
    assert fragment in done.stderr


# --- clawdbot.json secrets in the admin form ----------------------------------------------------

SECRET = "tok-very-secret-value-9876"
CONFIG = {"model": "claude", "gateway": {"authToken": SECRET, "port": 18789},
          "channels": [{"botKey": "xoxb-1234567890-abcdef"}]}


@pytest.fixture
def admin_client(client, orch):
    client.force_login(User.objects.create_superuser("mask-root", password="pw-mask-long"))
    return client


def test_admin_form_shows_config_secrets_masked_and_keeps_them_on_save(admin_client):
    inst = Instance.objects.create(display_name="Masked", clawdbot_config=CONFIG)
    url = reverse("admin:instances_instance_change", args=[inst.pk])
    html = admin_client.get(url).content.decode()
    assert SECRET not in html and "xoxb-1234567890-abcdef" not in html
    assert "****9876" in html and "****cdef" in html
    data = form_inputs(html).data
    shown = json.loads(data["clawdbot_config"])
    # Saved as shown, with one plain value changed: secrets stay, the change is applied.
    shown["model"] = "claude-2"
    data["clawdbot_config"] = json.dumps(shown)
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    inst.refresh_from_db()
    assert inst.clawdbot_config == {**CONFIG, "model": "claude-2"}
    # A value typed over a mask replaces the secret (in a form opened after that save: the
    # first one is stale now, and a stale form is refused).
    data = form_inputs(admin_client.get(url).content.decode()).data
    shown = json.loads(data["clawdbot_config"])
    shown["gateway"]["authToken"] = "tok-new-secret-value-1111"
    data["clawdbot_config"] = json.dumps(shown)
    assert admin_client.post(url, data).status_code == 302
    inst.refresh_from_db()
    assert inst.clawdbot_config["gateway"]["authToken"] == "tok-new-secret-value-1111"
    assert inst.clawdbot_config["channels"] == CONFIG["channels"]


def test_a_deep_config_stored_earlier_does_not_break_the_pages(admin_client):
    deep = leaf = {}
    for _ in range(3000):
        leaf["a"] = {}
        leaf = leaf["a"]
    inst = Instance.objects.create(display_name="Deep", name="bot-deep")
    # Written behind validation's back, as older versions could.
    Instance.objects.filter(pk=inst.pk).update(clawdbot_config={"k": "v"})
    inst.refresh_from_db()
    masked = keys.mask_secrets(deep)
    assert "(hidden)" in masked
