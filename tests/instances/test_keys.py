import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError

from instances import key_services, keys, services
from instances.models import Instance, Setting

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
ANTHROPIC = "sk-ant-test-0123456789-ROUNDTRIP"


@pytest.fixture
def reconciled(monkeypatch):
    """What key services asked to converge: one (instance names, message) entry per call."""
    calls = []

    def record(*, instance_ids, actor="system", action="reconcile", message=""):
        names = list(Instance.objects.filter(pk__in=instance_ids)
                     .order_by("name").values_list("name", flat=True))
        calls.append({"names": names, "actor": actor, "action": action, "message": message})

    monkeypatch.setattr(services, "instances_reconcile", record, raising=False)
    return calls


def _new_key() -> str:
    return Fernet.generate_key().decode()


def test_round_trip_and_ciphertext_is_not_the_value():
    token = keys.encrypt(ANTHROPIC)
    assert ANTHROPIC not in token
    assert keys.decrypt(token) == ANTHROPIC


def test_global_key_is_stored_encrypted():
    keys.set_global_key("ANTHROPIC_API_KEY", ANTHROPIC)
    stored = Setting.objects.get(key="api_key:ANTHROPIC_API_KEY").value
    assert ANTHROPIC not in stored and stored.startswith("gAAAA")
    assert keys.get_global_keys() == {"ANTHROPIC_API_KEY": ANTHROPIC}
    keys.set_global_key("ANTHROPIC_API_KEY", "")
    assert not Setting.objects.filter(key="api_key:ANTHROPIC_API_KEY").exists()


def test_unknown_key_name_is_refused():
    with pytest.raises(ValueError, match="unknown API key names: NOPE_KEY"):
        keys.set_global_key("NOPE_KEY", "x")


@pytest.mark.parametrize(
    ("value", "shown"),
    [("sk-ant-abcdefgh1234", "****1234"), ("abcdefgh1234", "****1234"),
     ("abcdefg1234", "****"), ("abc", "****"), ("", "")],
)
def test_mask_shows_only_the_last_four_and_nothing_of_a_short_key(value, shown):
    assert keys.mask(value) == shown


@pytest.mark.parametrize("bad", ["sk ant", "sk\nant", "sk\x00ant", "x" * 1001])
def test_values_that_cannot_be_keys_are_refused_without_echo(bad):
    with pytest.raises(ValueError) as exc:
        keys.normalize_key(bad)
    assert bad not in str(exc.value)


def test_pasted_whitespace_is_trimmed():
    assert keys.normalize_key("  sk-abc\n") == "sk-abc"


def test_effective_env_overlays_overrides_on_globals():
    keys.set_global_key("ANTHROPIC_API_KEY", "global-anthropic")
    keys.set_global_key("OPENAI_API_KEY", "global-openai")
    plain = Instance.objects.create(display_name="t7 plain")
    custom = Instance.objects.create(display_name="t7 custom")
    key_services.api_keys_set_overrides(
        instance=custom, values={"OPENAI_API_KEY": "own-openai", "BRAVE_API_KEY": "own-brave"},
        reconcile=False)
    custom.refresh_from_db()
    assert keys.effective_env(plain) == {
        "ANTHROPIC_API_KEY": "global-anthropic", "OPENAI_API_KEY": "global-openai"}
    assert keys.effective_env(custom) == {
        "ANTHROPIC_API_KEY": "global-anthropic", "OPENAI_API_KEY": "own-openai",
        "BRAVE_API_KEY": "own-brave"}
    assert "own-openai" not in custom.encrypted_api_keys


def test_clearing_an_override_falls_back_to_the_global(reconciled):
    keys.set_global_key("OPENAI_API_KEY", "global-openai")
    inst = Instance.objects.create(display_name="t7 fallback")
    key_services.api_keys_set_overrides(instance=inst, values={"OPENAI_API_KEY": "own"})
    changed = key_services.api_keys_set_overrides(instance=inst, clear=["OPENAI_API_KEY"],
                                                  actor="alice")
    assert changed == ["OPENAI_API_KEY"]
    inst.refresh_from_db()
    assert inst.encrypted_api_keys == ""
    assert keys.effective_env(inst) == {"OPENAI_API_KEY": "global-openai"}
    assert [c["names"] for c in reconciled] == [["bot-t7-fallback"], ["bot-t7-fallback"]]
    assert reconciled[-1]["actor"] == "alice" and reconciled[-1]["action"] == "api_keys"
    assert "OPENAI_API_KEY" in reconciled[-1]["message"]
    assert "restarts briefly" in reconciled[-1]["message"]


def test_empty_override_keeps_and_same_value_changes_nothing(reconciled):
    inst = Instance.objects.create(display_name="t7 keep")
    key_services.api_keys_set_overrides(instance=inst, values={"BRAVE_API_KEY": "brave-1"})
    assert key_services.api_keys_set_overrides(
        instance=inst, values={"BRAVE_API_KEY": "", "OPENAI_API_KEY": ""}) == []
    assert key_services.api_keys_set_overrides(
        instance=inst, values={"BRAVE_API_KEY": "brave-1"}) == []
    inst.refresh_from_db()
    assert keys.get_overrides(inst) == {"BRAVE_API_KEY": "brave-1"}
    assert len(reconciled) == 1


def test_setting_and_clearing_the_same_key_is_refused():
    inst = Instance.objects.create(display_name="t7 both")
    with pytest.raises(ValueError, match="either enter a new key or clear it"):
        key_services.api_keys_set_overrides(
            instance=inst, values={"BRAVE_API_KEY": "b"}, clear=["BRAVE_API_KEY"])


def test_global_change_converges_only_instances_without_an_override(reconciled):
    keys.set_global_key("ANTHROPIC_API_KEY", "global-1")
    plain_a = Instance.objects.create(display_name="t7 a")
    Instance.objects.create(display_name="t7 b")
    own = Instance.objects.create(display_name="t7 own")
    key_services.api_keys_set_overrides(
        instance=own, values={"ANTHROPIC_API_KEY": "own-anthropic"}, reconcile=False)
    # An override of another key does not shield an instance from this one.
    key_services.api_keys_set_overrides(
        instance=plain_a, values={"BRAVE_API_KEY": "own-brave"}, reconcile=False)

    assert key_services.api_keys_set_global(
        name="ANTHROPIC_API_KEY", value="global-2", actor="bob") is True
    assert reconciled == [{
        "names": ["bot-t7-a", "bot-t7-b"], "actor": "bob", "action": "api_keys",
        "message": "Global ANTHROPIC_API_KEY changed; the instance restarts briefly to pick it "
                   "up (its volumes are kept).",
    }]
    own.refresh_from_db()
    assert keys.effective_env(own)["ANTHROPIC_API_KEY"] == "own-anthropic"
    assert keys.effective_env(Instance.objects.get(name="bot-t7-b")) == {
        "ANTHROPIC_API_KEY": "global-2"}


def test_unchanged_global_converges_nothing(reconciled):
    Instance.objects.create(display_name="t7 same")
    key_services.api_keys_set_global(name="OPENAI_API_KEY", value="same")
    assert key_services.api_keys_set_global(name="OPENAI_API_KEY", value="same") is False
    assert key_services.api_keys_set_global(name="BRAVE_API_KEY", value="") is False
    assert len(reconciled) == 1


def test_removing_a_global_converges_its_users(reconciled):
    Instance.objects.create(display_name="t7 users")
    key_services.api_keys_set_global(name="BRAVE_API_KEY", value="brave")
    assert key_services.api_keys_set_global(name="BRAVE_API_KEY", value="") is True
    assert [c["names"] for c in reconciled] == [["bot-t7-users"], ["bot-t7-users"]]
    assert keys.get_global_keys() == {}


def test_unreadable_values_show_as_such_and_stop_effective_env(settings):
    keys.set_global_key("OPENAI_API_KEY", "old-openai")
    inst = Instance.objects.create(display_name="t7 lost")
    key_services.api_keys_set_overrides(instance=inst, values={"BRAVE_API_KEY": "old-brave"},
                                        reconcile=False)
    settings.CLAWORC_ENCRYPTION_KEY = _new_key()  # the old key is lost

    assert str(keys.global_key_display()["OPENAI_API_KEY"]) == "unreadable — re-enter"
    assert str(keys.override_display(inst)["BRAVE_API_KEY"]) == "unreadable — re-enter"
    assert keys.get_global_keys() == {}
    with pytest.raises(keys.UnreadableKey) as exc:
        keys.effective_env(inst)
    message = str(exc.value)
    assert "overrides of bot-t7-lost" in message and "CLAWORC_ENCRYPTION_KEY" in message
    assert "old-brave" not in message
    plain = Instance.objects.create(display_name="t7 lost plain")
    with pytest.raises(keys.UnreadableKey) as exc:
        keys.effective_env(plain)
    message = str(exc.value)
    assert "global OPENAI_API_KEY" in message and "CLAWORC_ENCRYPTION_KEY" in message
    assert "old-openai" not in message


def test_an_unreadable_global_does_not_block_an_instance_that_overrides_it(settings):
    keys.set_global_key("OPENAI_API_KEY", "old-openai")
    settings.CLAWORC_ENCRYPTION_KEY = _new_key() + "," + settings.CLAWORC_ENCRYPTION_KEY
    keys.set_global_key("BRAVE_API_KEY", "brave-readable")
    inst = Instance.objects.create(display_name="t7 overrides")
    key_services.api_keys_set_overrides(instance=inst, values={"OPENAI_API_KEY": "own-openai"},
                                        reconcile=False)
    settings.CLAWORC_ENCRYPTION_KEY = settings.CLAWORC_ENCRYPTION_KEY.split(",")[0]
    # Its own OPENAI_API_KEY replaces the unreadable global: strict only for what it uses.
    assert keys.effective_env(inst) == {"OPENAI_API_KEY": "own-openai",
                                        "BRAVE_API_KEY": "brave-readable"}
    other = Instance.objects.create(display_name="t7 uses global")
    with pytest.raises(keys.UnreadableKey, match="global OPENAI_API_KEY"):
        keys.effective_env(other)


def test_re_entering_replaces_unreadable_overrides(settings, reconciled):
    inst = Instance.objects.create(display_name="t7 reenter")
    key_services.api_keys_set_overrides(instance=inst, values={"BRAVE_API_KEY": "old"},
                                        reconcile=False)
    settings.CLAWORC_ENCRYPTION_KEY = _new_key()
    assert key_services.api_keys_set_overrides(instance=inst, values={}) == []
    assert key_services.api_keys_set_overrides(
        instance=inst, values={"OPENAI_API_KEY": "new"}) == ["OPENAI_API_KEY"]
    inst.refresh_from_db()
    assert keys.get_overrides(inst) == {"OPENAI_API_KEY": "new"}


def test_rotation_reencrypts_with_the_newest_key(settings):
    old = settings.CLAWORC_ENCRYPTION_KEY
    keys.set_global_key("ANTHROPIC_API_KEY", ANTHROPIC)
    inst = Instance.objects.create(display_name="t7 rotate")
    key_services.api_keys_set_overrides(instance=inst, values={"OPENAI_API_KEY": "own-openai"},
                                        reconcile=False)
    inst.refresh_from_db()
    updated_at = inst.updated_at

    new = _new_key()
    settings.CLAWORC_ENCRYPTION_KEY = f"{new},{old}"
    # Old data stays readable through MultiFernet before the command runs.
    assert keys.effective_env(inst) == {"ANTHROPIC_API_KEY": ANTHROPIC,
                                        "OPENAI_API_KEY": "own-openai"}
    out = _call("rotate_encryption_key")
    assert "Re-encrypted 2 stored API key values" in out

    settings.CLAWORC_ENCRYPTION_KEY = new  # the old key can now be dropped
    inst.refresh_from_db()
    assert keys.effective_env(inst) == {"ANTHROPIC_API_KEY": ANTHROPIC,
                                        "OPENAI_API_KEY": "own-openai"}
    assert inst.updated_at == updated_at
    token = Setting.objects.get(key="api_key:ANTHROPIC_API_KEY").value
    assert Fernet(new.encode()).decrypt(token.encode()).decode() == ANTHROPIC


def test_rotation_stops_on_unreadable_values_unless_told_to_forget(settings, reconciled):
    keys.set_global_key("BRAVE_API_KEY", "lost-brave")
    inst = Instance.objects.create(display_name="t7 forget")
    key_services.api_keys_set_overrides(instance=inst, values={"OPENAI_API_KEY": "lost"},
                                        reconcile=False)
    settings.CLAWORC_ENCRYPTION_KEY = _new_key()
    keys.set_global_key("ANTHROPIC_API_KEY", "readable")

    with pytest.raises(CommandError) as exc:
        _call("rotate_encryption_key")
    assert "global BRAVE_API_KEY" in str(exc.value)
    assert "overrides of bot-t7-forget" in str(exc.value)
    assert "lost-brave" not in str(exc.value)

    out = _call("rotate_encryption_key", "--forget-unreadable")
    assert "Removed the unreadable global BRAVE_API_KEY" in out
    assert "Removed the unreadable overrides of bot-t7-forget" in out
    inst.refresh_from_db()
    assert keys.effective_env(inst) == {"ANTHROPIC_API_KEY": "readable"}
    assert [c["names"] for c in reconciled] == [["bot-t7-forget"], ["bot-t7-forget"]]


def _call(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("", "CLAWORC_ENCRYPTION_KEY is not set"),
        ("not-a-key", "CLAWORC_ENCRYPTION_KEY entry 1 of 1 is not a Fernet key"),
        (f"{Fernet.generate_key().decode()},short", "entry 2 of 2 is not a Fernet key"),
    ],
)
def test_bad_encryption_key_is_a_clear_error(settings, raw, fragment):
    settings.CLAWORC_ENCRYPTION_KEY = raw
    with pytest.raises(ImproperlyConfigured, match=fragment) as exc:
        keys.check_encryption_key()
    if raw:
        assert "not-a-key" not in str(exc.value) and "short" not in str(exc.value)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [("", "CLAWORC_ENCRYPTION_KEY is not set"),
     ("garbage-value", "CLAWORC_ENCRYPTION_KEY entry 1 of 1 is not a Fernet key")],
)
def test_start_up_stops_naming_the_variable(raw, fragment):
    env = {**os.environ, "CLAWORC_ENCRYPTION_KEY": raw}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert fragment in result.stderr
    assert "garbage-value" not in result.stderr


def test_wrong_key_is_a_database_check_error(settings):
    from django.core import checks

    keys.set_global_key("OPENAI_API_KEY", "x1")
    assert checks.run_checks(databases=["default"]) == []
    settings.CLAWORC_ENCRYPTION_KEY = _new_key()
    errors = [e for e in checks.run_checks(databases=["default"]) if e.id.startswith("claworc")]
    assert [e.id for e in errors] == ["claworc.E002"]
    assert "CLAWORC_ENCRYPTION_KEY cannot decrypt any of the 1 stored" in errors[0].msg
    keys.set_global_key("ANTHROPIC_API_KEY", "readable")
    errors = [e for e in checks.run_checks(databases=["default"]) if e.id.startswith("claworc")]
    assert [e.id for e in errors] == ["claworc.W001"]
    assert "unreadable — re-enter" in errors[0].msg


def test_key_changes_reach_the_backend_through_the_real_control_flow(
        settings, django_capture_on_commit_callbacks):
    """Services, on-commit enqueue and the reconcile task for real; the backend is a fake."""
    from orchestrators.registry import override
    from tests.fakes import FakeOrchestrator, eager_tasks

    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 33000, 33199
    with override(FakeOrchestrator()) as fake:
        def run(fn, **kwargs):
            with eager_tasks(), django_capture_on_commit_callbacks(execute=True):
                return fn(**kwargs)

        plain = run(services.instance_create, display_name="t7 flow plain")
        own = run(services.instance_create, display_name="t7 flow own")
        run(key_services.api_keys_set_overrides, instance=own,
            values={"OPENAI_API_KEY": "own-openai"}, actor="carol")
        assert dict(fake.workloads["bot-t7-flow-own"].spec.env) == {
            "OPENAI_API_KEY": "own-openai"}
        generations = {n: w.generation for n, w in fake.workloads.items()}

        run(key_services.api_keys_set_global, name="OPENAI_API_KEY", value="global-openai",
            actor="carol")
        assert dict(fake.workloads["bot-t7-flow-plain"].spec.env) == {
            "OPENAI_API_KEY": "global-openai"}
        plain_generation = fake.workloads["bot-t7-flow-plain"].generation
        assert plain_generation == generations["bot-t7-flow-plain"] + 1
        # The overridden instance was not even asked to converge.
        assert fake.workloads["bot-t7-flow-own"].generation == generations["bot-t7-flow-own"]
        assert fake.ops("ensure").count("bot-t7-flow-own") == 2
        plain.refresh_from_db()
        assert plain.status == "running"
        assert plain.activities.filter(action="api_keys", actor="carol").exists()


def test_unreadable_keys_stop_a_reconcile_with_a_message_not_a_crash(
        settings, django_capture_on_commit_callbacks):
    from orchestrators.registry import override
    from tests.fakes import FakeOrchestrator, eager_tasks

    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 33000, 33199
    with override(FakeOrchestrator()) as fake:
        with eager_tasks(), django_capture_on_commit_callbacks(execute=True):
            inst = services.instance_create(display_name="t7 flow lost")
            key_services.api_keys_set_overrides(instance=inst, values={"BRAVE_API_KEY": "b-1"},
                                                reconcile=False)
        settings.CLAWORC_ENCRYPTION_KEY = _new_key()
        with eager_tasks(), django_capture_on_commit_callbacks(execute=True):
            services.instances_reconcile(instance_ids=[inst.pk])
        inst.refresh_from_db()
        assert inst.status == "error"
        assert "The API key overrides of bot-t7-flow-lost cannot be decrypted with " \
               "CLAWORC_ENCRYPTION_KEY" in inst.status_message
        assert fake.ops("ensure") == ["bot-t7-flow-lost"], "the running workload is untouched"
