"""The model signals: thin links from a row's creation and deletion to the services."""

import json

import pytest
from django.core import serializers

from instances import services
from instances.models import Activity, Instance
from tests.fakes import eager_tasks

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _ports(settings):
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 32000, 32399


def test_creating_from_code_provisions_after_commit(orch, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        inst = Instance.objects.create(display_name="T4 Shell")
    assert len(callbacks) == 1 and orch.calls == []
    with eager_tasks():
        callbacks[0]()
    inst.refresh_from_db()
    assert orch.ops("ensure") == ["bot-t4-shell"] and inst.status == "running"


def test_saving_an_existing_row_does_not_provision_again(django_capture_on_commit_callbacks):
    inst = Instance.objects.create(display_name="T4 Again")
    with django_capture_on_commit_callbacks() as callbacks:
        inst.display_name = "renamed"
        inst.save()
    assert callbacks == []


def test_editing_what_it_runs_with_from_code_converges_it(orch,
                                                        django_capture_on_commit_callbacks):
    with eager_tasks(), django_capture_on_commit_callbacks(execute=True):
        Instance.objects.create(display_name="T4 Edit")
    orch.calls.clear()
    inst = Instance.objects.get(name="bot-t4-edit")  # as the shell would load it
    with django_capture_on_commit_callbacks() as callbacks:
        inst.cpu_limit = "1"
        inst.clawdbot_config["model"] = "claude"  # changed in place, as code does
        inst.save()
    assert len(callbacks) == 1 and orch.calls == []  # queued, not run in the caller
    assert Activity.objects.get(action="update").message == (
        "Changed clawdbot_config, cpu_limit; converging the workload.")
    with eager_tasks():
        callbacks[0]()
    spec = orch.workloads["bot-t4-edit"].spec
    assert spec.resources.cpu_limit == "1" and spec.config == {"model": "claude"}
    with django_capture_on_commit_callbacks() as callbacks:
        inst.save()  # nothing changed since: nothing to converge
    assert callbacks == []


def test_the_config_is_compared_with_what_was_loaded_whichever_way_it_changes(
        orch, django_capture_on_commit_callbacks):
    """Loaded rows copy their config only when code first touches it (lists of a thousand
    never do); a replaced or mutated config is still told from the loaded one."""
    with eager_tasks(), django_capture_on_commit_callbacks(execute=True):
        Instance.objects.create(display_name="T4 Lazy", clawdbot_config={"a": {"b": 1}})
    listed = list(Instance.objects.filter(name="bot-t4-lazy"))
    assert "clawdbot_config" not in listed[0]._saved_spec  # a list pays no copy
    replaced = Instance.objects.get(name="bot-t4-lazy")
    replaced.clawdbot_config = {"a": {"b": 1}}  # replaced, never read: the same value
    assert replaced.changed_spec_fields() == []
    replaced.clawdbot_config = {"a": {"b": 2}}
    assert replaced.changed_spec_fields() == ["clawdbot_config"]
    nested = Instance.objects.get(name="bot-t4-lazy")
    nested.clawdbot_config["a"]["b"] = 3  # deep, in place, through the first read
    assert nested.changed_spec_fields() == ["clawdbot_config"]
    with django_capture_on_commit_callbacks() as callbacks:
        nested.save()
    assert len(callbacks) == 1
    kept = nested.clawdbot_config["a"]  # a reference held across the save
    assert nested.changed_spec_fields() == []
    kept["b"] = 4
    assert nested.changed_spec_fields() == ["clawdbot_config"]


def test_raw_saves_from_fixtures_do_not_provision(django_capture_on_commit_callbacks):
    data = json.dumps([{"model": "instances.instance", "pk": 4242,
                        "fields": {"display_name": "T4 Fixture", "name": "bot-t4-fixture",
                                   "status": "running", "created_at": "2026-01-01T00:00:00Z",
                                   "updated_at": "2026-01-01T00:00:00Z",
                                   "status_since": "2026-01-01T00:00:00Z"}}])
    with django_capture_on_commit_callbacks() as callbacks:
        for obj in serializers.deserialize("json", data):
            obj.save()  # raw=True, as loaddata does
    assert Instance.objects.get(pk=4242).name == "bot-t4-fixture"
    assert callbacks == [] and not Activity.objects.exists()


@pytest.mark.parametrize(("keep", "purged"), [(False, True), (True, False)])
def test_deleting_a_row_tears_down_by_name_with_the_volume_choice(
        orch, django_capture_on_commit_callbacks, keep, purged):
    with eager_tasks(), django_capture_on_commit_callbacks(execute=True):
        inst = Instance.objects.create(display_name="T4 Gone", keep_volumes=keep)
    assert len([v for v in orch.volumes if "bot-t4-gone" in v]) == 4
    with django_capture_on_commit_callbacks() as callbacks:
        inst.delete()
    assert len(callbacks) == 1 and orch.ops("delete") == []
    # Deleting from code does not bypass the two steps: the row stays until the teardown.
    assert Instance.objects.get(name="bot-t4-gone").status == "deleting"
    with eager_tasks():
        callbacks[0]()
    assert orch.ops("delete") == ["bot-t4-gone"]
    assert len([v for v in orch.volumes if "bot-t4-gone" in v]) == (0 if purged else 4)
    assert not Instance.objects.filter(name="bot-t4-gone").exists()


def test_queryset_delete_tears_down_each_row(orch, django_capture_on_commit_callbacks):
    Instance.objects.bulk_create([Instance(display_name=n, name=n)
                                  for n in ("bot-t4-q1", "bot-t4-q2")])
    with services.acting_as("frank"), django_capture_on_commit_callbacks() as callbacks:
        Instance.objects.filter(name__startswith="bot-t4-q").delete()
    assert len(callbacks) == 2
    assert sorted(Activity.objects.values_list("instance_name", "action", "actor")) == [
        ("bot-t4-q1", "delete", "frank"), ("bot-t4-q2", "delete", "frank")]
    assert set(Instance.objects.values_list("status", flat=True)) == {"deleting"}
