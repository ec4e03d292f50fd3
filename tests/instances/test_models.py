import pytest
from django.core.exceptions import ValidationError

from instances.models import Instance, Setting, derive_name
from instances.validators import NAME_MAX_LENGTH, validate_config, validate_instance_name

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        ("My Bot", "bot-my-bot"),
        ("mybot", "bot-mybot"),
        ("  Spaces   everywhere ", "bot-spaces-everywhere"),
        ("Café Crème", "bot-cafe-creme"),
        ("bot-already", "bot-already"),
        ("Under_score & Co.", "bot-under-score-co"),
        ("--Dashes__", "bot-dashes"),
    ],
)
def test_name_is_derived_from_display_name(display, expected):
    assert derive_name(display) == expected


def test_derived_name_is_cut_to_fit_the_service_name():
    name = derive_name("x" * 200)
    assert len(name) == NAME_MAX_LENGTH == 59
    assert len(f"{name}-vnc") <= 63
    validate_instance_name(name)


def test_create_from_code_derives_the_name():
    inst = Instance.objects.create(display_name="My Bot")
    assert inst.name == "bot-my-bot"
    assert inst.cpu_request == "500m" and inst.cpu_limit == "2000m"
    assert inst.memory_request == "1Gi" and inst.memory_limit == "4Gi"
    assert (inst.storage_clawdbot, inst.storage_homebrew, inst.storage_clawd,
            inst.storage_chrome) == ("5Gi", "10Gi", "5Gi", "5Gi")
    assert inst.desired_state == "running" and inst.status == "creating"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("Bot-Upper", "lowercase letters"),
        ("has space", "' '"),
        ("bötli", "'ö'"),
        ("../etc", "'.', '/'"),
        ("-leading", "start or end with '-'"),
        ("trailing-", "start or end with '-'"),
        ("a" * 60, "at most 59"),
        ("", "empty"),
    ],
)
def test_bad_names_are_refused_with_the_reason(name, fragment):
    with pytest.raises(ValidationError) as err:
        validate_instance_name(name)
    assert fragment in " ".join(err.value.messages)


def test_full_clean_refuses_a_bad_given_name():
    inst = Instance(display_name="x", name="Bad Name")
    with pytest.raises(ValidationError) as err:
        inst.full_clean()
    assert "name" in err.value.message_dict


def test_display_name_without_ascii_needs_an_explicit_name():
    inst = Instance(display_name="日本語")
    with pytest.raises(ValidationError) as err:
        inst.full_clean()
    assert "enter a name" in err.value.message_dict["display_name"][0]


def test_save_refuses_a_bad_name_even_without_full_clean():
    with pytest.raises(ValidationError):
        Instance.objects.create(display_name="x", name="../../etc")
    assert not Instance.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("cpu_request", "lots", "not a CPU quantity"),
        ("cpu_limit", "2Gi", "not a CPU quantity"),
        ("cpu_limit", "0", "more than zero"),
        ("memory_limit", "4GB", "not a size"),
        ("memory_request", "-1Gi", "not a size"),
        ("storage_homebrew", "ten", "not a size"),
    ],
)
def test_bad_quantities_are_refused(field, value, fragment):
    inst = Instance(display_name="q", **{field: value})
    with pytest.raises(ValidationError) as err:
        inst.full_clean()
    assert fragment in err.value.message_dict[field][0]


@pytest.mark.parametrize("value", ["1.5", "250m", "2"])
def test_good_cpu_quantities_pass(value):
    Instance(display_name="q", cpu_request="100m", cpu_limit=value).full_clean()


def test_config_must_be_a_json_object():
    with pytest.raises(ValidationError, match="not valid JSON"):
        validate_config("{nope")
    with pytest.raises(ValidationError, match="JSON object"):
        validate_config([1, 2])
    validate_config({"model": "claude"})
    inst = Instance(display_name="cfg", clawdbot_config=["not", "an", "object"])
    with pytest.raises(ValidationError) as err:
        inst.full_clean()
    assert "clawdbot_config" in err.value.message_dict


def test_vnc_urls_use_the_node_ip(settings):
    settings.CLAWORC_NODE_IP = "10.1.2.3"
    inst = Instance(display_name="v")
    assert inst.vnc_url(30100) == "http://10.1.2.3:30100/vnc.html?autoconnect=true"


def test_setting_typed_accessors():
    assert Setting.get_str("orchestrator_backend", "auto") == "auto"
    Setting.set("orchestrator_backend", "docker")
    Setting.set("flag", True)
    Setting.set("count", 7)
    assert Setting.get_str("orchestrator_backend") == "docker"
    assert Setting.get_bool("flag") is True
    assert Setting.get_int("count") == 7
    assert Setting.get_int("orchestrator_backend", 3) == 3
    Setting.set("orchestrator_backend", "kubernetes")
    assert Setting.objects.filter(key="orchestrator_backend").count() == 1
