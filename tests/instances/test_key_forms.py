"""The admin's API key inputs: write-only, masked, empty keeps, "clear" removes."""

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from instances import key_services, keys, services
from instances.forms import GlobalApiKeysForm, InstanceAdminForm
from instances.models import Instance, Setting
from tests.html_forms import form_inputs

pytestmark = pytest.mark.django_db

OVERRIDE = "sk-override-SECRET-aaaa-1111"
GLOBAL = "sk-global-SECRET-bbbb-2222"


@pytest.fixture
def reconciled(monkeypatch):
    calls = []

    def record(*, instance_ids, actor="system", action="reconcile", message=""):
        calls.append((sorted(Instance.objects.filter(pk__in=instance_ids)
                             .values_list("name", flat=True)), actor, message))

    monkeypatch.setattr(services, "instances_reconcile", record, raising=False)
    return calls


@pytest.fixture
def staff(client):
    user = User.objects.create_superuser("t7admin", password="pw-t7-admin")
    client.force_login(user)
    return client


def _change_url(instance):
    return reverse("admin:instances_instance_change", args=[instance.pk])


def _post_change(client, instance, **fields):
    page = client.get(_change_url(instance))
    assert page.status_code == 200
    data = form_inputs(page.content.decode()).data
    data.update(fields)
    return client.post(_change_url(instance), data, follow=True)


def test_change_page_shows_only_masks_and_never_a_value(staff):
    key_services.api_keys_set_global(name="OPENAI_API_KEY", value=GLOBAL)
    inst = Instance.objects.create(display_name="t7 form show")
    key_services.api_keys_set_overrides(instance=inst, values={"ANTHROPIC_API_KEY": OVERRIDE},
                                        reconcile=False)
    page = staff.get(_change_url(inst))
    html = page.content.decode()
    assert page.status_code == 200
    assert OVERRIDE not in html and GLOBAL not in html
    assert "Override: ****1111." in html
    assert "No override: uses the global key ****2222." in html
    assert "No override and no global key: not set." in html
    assert "restarts the instance briefly" in html
    inputs = form_inputs(html)
    assert inputs.password_values == []
    assert inputs.data["key_anthropic_api_key"] == ""


def test_empty_input_keeps_and_new_value_replaces_with_a_restart_notice(staff, reconciled):
    inst = Instance.objects.create(display_name="t7 form keep")
    key_services.api_keys_set_overrides(instance=inst, values={"BRAVE_API_KEY": OVERRIDE},
                                        reconcile=False)
    response = _post_change(staff, inst, key_brave_api_key="")
    assert response.status_code == 200
    inst.refresh_from_db()
    assert keys.get_overrides(inst) == {"BRAVE_API_KEY": OVERRIDE}
    assert reconciled == []

    response = _post_change(staff, inst, key_openai_api_key="  sk-new-openai-9999\n")
    html = response.content.decode()
    assert ("API key override OPENAI_API_KEY changed: bot-t7-form-keep restarts briefly"
            in html)
    assert "sk-new-openai-9999" not in html
    inst.refresh_from_db()
    assert keys.get_overrides(inst) == {"BRAVE_API_KEY": OVERRIDE,
                                        "OPENAI_API_KEY": "sk-new-openai-9999"}
    assert reconciled == [(["bot-t7-form-keep"], "t7admin",
                           "API key override OPENAI_API_KEY changed; the instance restarts "
                           "briefly to pick it up (its volumes are kept).")]


def test_clear_removes_the_override(staff, reconciled):
    inst = Instance.objects.create(display_name="t7 form clear")
    key_services.api_keys_set_overrides(
        instance=inst, values={"BRAVE_API_KEY": OVERRIDE, "OPENAI_API_KEY": "x-1234"},
        reconcile=False)
    _post_change(staff, inst, clear_brave_api_key="on")
    inst.refresh_from_db()
    assert keys.get_overrides(inst) == {"OPENAI_API_KEY": "x-1234"}
    assert [r[0] for r in reconciled] == [["bot-t7-form-clear"]]
    history = staff.get(reverse("admin:instances_instance_history", args=[inst.pk]))
    assert OVERRIDE not in history.content.decode()


def test_value_and_clear_together_is_an_error_that_echoes_nothing(staff, reconciled):
    inst = Instance.objects.create(display_name="t7 form both")
    key_services.api_keys_set_overrides(instance=inst, values={"BRAVE_API_KEY": "old-0000"},
                                        reconcile=False)
    response = _post_change(staff, inst, key_brave_api_key=OVERRIDE, clear_brave_api_key="on")
    html = response.content.decode()
    assert "Either enter a new key or clear it, not both." in html
    assert OVERRIDE not in html
    inst.refresh_from_db()
    assert keys.get_overrides(inst) == {"BRAVE_API_KEY": "old-0000"}
    assert reconciled == []


def test_unreadable_override_shows_and_can_be_re_entered(staff, settings, reconciled):
    inst = Instance.objects.create(display_name="t7 form lost")
    key_services.api_keys_set_overrides(instance=inst, values={"BRAVE_API_KEY": OVERRIDE},
                                        reconcile=False)
    settings.CLAWORC_ENCRYPTION_KEY = Fernet.generate_key().decode()
    page = staff.get(_change_url(inst))
    assert page.status_code == 200
    assert "Override: unreadable — re-enter." in page.content.decode()
    _post_change(staff, inst, key_brave_api_key="sk-brave-new-7777")
    inst.refresh_from_db()
    assert keys.get_overrides(inst) == {"BRAVE_API_KEY": "sk-brave-new-7777"}


def test_adding_an_instance_stores_overrides_without_a_second_reconcile(staff, reconciled):
    page = staff.get(reverse("admin:instances_instance_add"))
    data = form_inputs(page.content.decode()).data
    data.update(display_name="t7 form add", key_anthropic_api_key=OVERRIDE)
    response = staff.post(reverse("admin:instances_instance_add"), data, follow=True)
    assert response.status_code == 200, response.content.decode()[:2000]
    inst = Instance.objects.get(name="bot-t7-form-add")
    assert keys.get_overrides(inst) == {"ANTHROPIC_API_KEY": OVERRIDE}
    assert reconciled == []


def test_global_page_is_listed_masks_and_converges(staff, reconciled):
    Instance.objects.create(display_name="t7 global user")
    own = Instance.objects.create(display_name="t7 global own")
    key_services.api_keys_set_overrides(instance=own, values={"OPENAI_API_KEY": "own-1"},
                                        reconcile=False)
    index = staff.get(reverse("admin:index")).content.decode()
    url = reverse("admin:instances_api_keys")
    assert f'href="{url}"' in index and "Global API keys" in index

    page = staff.get(url)
    assert page.status_code == 200
    assert "1 of 2 instances use it; 1 overrides it." in page.content.decode()
    data = form_inputs(page.content.decode()).data
    data["key_openai_api_key"] = GLOBAL
    html = staff.post(url, data, follow=True).content.decode()
    assert GLOBAL not in html
    assert "Stored: ****2222." in html
    assert ("OPENAI_API_KEY changed: 1 instance using it restarts briefly to pick up the new "
            "environment; volumes are kept.") in html
    assert "Set the global OPENAI_API_KEY (value not recorded)." in html
    assert reconciled == [(["bot-t7-global-user"], "t7admin",
                           "Global OPENAI_API_KEY changed; the instance restarts briefly to pick "
                           "it up (its volumes are kept).")]
    assert keys.get_global_keys() == {"OPENAI_API_KEY": GLOBAL}

    data = form_inputs(html).data
    data["clear_openai_api_key"] = "on"
    html = staff.post(url, data, follow=True).content.decode()
    assert "Removed the global OPENAI_API_KEY (value not recorded)." in html
    assert keys.get_global_keys() == {}


def test_global_keys_rows_never_reach_the_setting_admin(staff):
    key_services.api_keys_set_global(name="BRAVE_API_KEY", value=GLOBAL)
    row = Setting.objects.get(key="api_key:BRAVE_API_KEY")
    listing = staff.get(reverse("admin:instances_setting_changelist")).content.decode()
    assert "api_key:BRAVE_API_KEY" not in listing and row.value not in listing
    change = staff.get(reverse("admin:instances_setting_change", args=[row.pk]), follow=True)
    assert row.value not in change.content.decode()


def test_global_page_needs_the_setting_permissions(client):
    user = User.objects.create_user("t7viewer", password="pw", is_staff=True)
    client.force_login(user)
    url = reverse("admin:instances_api_keys")
    assert client.get(url).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_setting"))
    user = User.objects.get(pk=user.pk)
    client.force_login(user)
    page = client.get(url)
    assert page.status_code == 200
    assert 'value="Save"' not in page.content.decode()
    assert client.post(url, {"key_brave_api_key": "x"}).status_code == 403
    assert keys.get_global_keys() == {}


def test_forms_validate_without_the_admin(reconciled):
    form = GlobalApiKeysForm({"key_brave_api_key": "has space"})
    assert not form.is_valid()
    assert form.errors["key_brave_api_key"] == [
        "An API key cannot contain spaces, line breaks or control characters."]
    inst = Instance.objects.create(display_name="t7 plain form")
    form = InstanceAdminForm(
        {"display_name": inst.display_name, "name": inst.name, "cpu_request": "500m",
         "cpu_limit": "2000m", "memory_request": "1Gi", "memory_limit": "4Gi",
         "storage_clawdbot": "5Gi", "storage_homebrew": "10Gi", "storage_clawd": "5Gi",
         "storage_chrome": "5Gi", "clawdbot_config": "{}", "desired_state": "running",
         "key_openai_api_key": "sk-x-5555"},
        instance=inst)
    assert form.is_valid(), form.errors
    form.save()
    assert form.save_api_keys(actor="t7", reconcile=False) == ["OPENAI_API_KEY"]
    assert keys.get_overrides(inst) == {"OPENAI_API_KEY": "sk-x-5555"}


@pytest.mark.parametrize("page", ["instance", "global"])
def test_an_error_report_hides_the_typed_key(staff, monkeypatch, page):
    """A crash while saving: Django's error report (mail_admins) shows neither POST nor locals."""
    import logging
    import sys

    from django.views.debug import ExceptionReporter

    def crash(*args, **kwargs):  # called with no key among its arguments
        raise RuntimeError("database went away")

    inst = Instance.objects.create(display_name="t7 form crash")
    # Fails after the key was read, normalized and encrypted: every frame above holds it.
    monkeypatch.setattr(key_services, "logger", type("Crash", (), {"info": crash})())
    url = _change_url(inst) if page == "instance" else reverse("admin:instances_api_keys")
    data = form_inputs(staff.get(url).content.decode()).data
    data["key_brave_api_key"] = OVERRIDE
    staff.raise_request_exception = False
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("django.request").addHandler(handler)
    try:
        response = staff.post(url, data)
    finally:
        logging.getLogger("django.request").removeHandler(handler)
    assert response.status_code == 500
    record = next(r for r in records if r.exc_info)
    assert record.exc_info[0] is RuntimeError
    reporter = ExceptionReporter(record.request, *record.exc_info)
    for report in (reporter.get_traceback_text(), reporter.get_traceback_html()):
        assert "database went away" in report and "key_brave_api_key" in report
        assert OVERRIDE not in report, "the typed key is in the error report"
    assert sys.exc_info() == (None, None, None)
