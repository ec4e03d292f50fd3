"""Start-up refuses wrong values with a message that names the variable."""

import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from claworc_site import config

ROOT = Path(__file__).resolve().parents[1]


def _check(**env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CLAWORC_PORT_START": "abc"}, "CLAWORC_PORT_START must be a whole number"),
        ({"CLAWORC_PORT_END": "3.5"}, "CLAWORC_PORT_END must be a whole number"),
        ({"CLAWORC_PORT_START": "30101"}, "CLAWORC_PORT_START must be even"),
        ({"CLAWORC_PORT_START": "30200", "CLAWORC_PORT_END": "30100"},
         "CLAWORC_PORT_END (30100) must be greater than CLAWORC_PORT_START (30200)"),
        ({"CLAWORC_PORT_END": "70000"}, "CLAWORC_PORT_END must be a TCP port"),
        ({"CLAWORC_DOCKER_PRIVILEGED": "maybe"}, "CLAWORC_DOCKER_PRIVILEGED must be true or false"),
        ({"SECRET_KEY": "", "DEBUG": "false"}, "SECRET_KEY is required when DEBUG is off"),
    ],
)
def test_bad_values_stop_start_up_naming_the_variable(env, fragment):
    result = _check(**env)
    assert result.returncode != 0
    assert fragment in result.stderr


def test_defaults_are_the_specs(monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWORC_")}
    env.update(SECRET_KEY="x", DJANGO_SETTINGS_MODULE="claworc_site.settings")
    code = (
        "from django.conf import settings as s; "
        "print(s.CLAWORC_NODE_IP, s.CLAWORC_DOCKER_CONFIG_DIR, s.CLAWORC_DOCKER_HOST, "
        "s.CLAWORC_PORT_START, s.CLAWORC_PORT_END, s.CLAWORC_DOCKER_PRIVILEGED, "
        "s.CLAWORC_K8S_NAMESPACE, s.CLAWORC_AGENT_IMAGE, s.CELERY_BROKER_URL.split(':')[0], "
        "s.DATABASES['default']['ENGINE'])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [
        "192.168.1.104", "/app/data/configs", "None", "30100", "30199", "True", "claworc",
        "glukw/openclaw-vnc-chrome:latest", "sqla+sqlite", "django.db.backends.sqlite3",
    ]


# --- the port range suits the backends (warnings at start-up) -----------------------------------

def test_a_port_range_in_the_ephemeral_range_or_outside_node_ports_is_warned_about():
    result = _check(CLAWORC_PORT_START="40000", CLAWORC_PORT_END="41999")
    assert result.returncode == 0, result.stderr  # a warning: the site still starts
    out = result.stdout + result.stderr
    low, high = config.ephemeral_port_range()
    assert f"(claworc.W001) On Docker: CLAWORC_PORT_START..CLAWORC_PORT_END (40000-41999) " \
        f"overlaps the kernel's ephemeral port range {low}-{high}" in out
    assert "(claworc.W002) On Kubernetes: CLAWORC_PORT_START..CLAWORC_PORT_END (40000-41999) " \
        "is not inside the default NodePort range 30000-32767" in out
    assert "The range holds 1000 instances" in out


@pytest.mark.parametrize("env", [{}, {"CLAWORC_PORT_END": "32099"}])
def test_the_default_range_and_the_one_advised_for_1000_instances_pass(env):
    result = _check(**env)
    assert result.returncode == 0, result.stderr
    assert "claworc.W00" not in result.stdout + result.stderr


def test_port_range_warnings_per_backend():
    ephemeral = (32768, 60999)
    assert config.port_range_warnings(30100, 32099, ephemeral=ephemeral) == {}
    assert set(config.port_range_warnings(32000, 33999, ephemeral=ephemeral)) == {
        "claworc.W001", "claworc.W002"}
    # A cluster-only concern below 30000; a Docker-only one for a kernel with a low range.
    assert set(config.port_range_warnings(20000, 21999, ephemeral=ephemeral)) == {"claworc.W002"}
    assert set(config.port_range_warnings(30100, 32099, ephemeral=(10000, 31000))) == {
        "claworc.W001"}
    assert config.port_range_warnings(30100, 30199, ephemeral=None) == {}


def test_ephemeral_port_range_reads_the_kernel_setting(tmp_path):
    source = tmp_path / "range"
    source.write_text("32768\t60999\n")
    assert config.ephemeral_port_range(str(source)) == (32768, 60999)
    assert config.ephemeral_port_range(str(tmp_path / "missing")) is None


# --- persistent database connections ------------------------------------------------------------

_CONNECTIONS_PER_REQUEST = """
import django
django.setup()
from django.core.signals import request_finished, request_started
from django.db import connection
from django.db.backends.signals import connection_created
opened = []
connection_created.connect(lambda **kwargs: opened.append(1), weak=False)
for _ in range(3):
    request_started.send(sender=None)
    connection.ensure_connection()
    request_finished.send(sender=None)
print(len(opened))
"""


@pytest.mark.parametrize(("max_age", "connections"), [(None, 1), ("0", 3)])
def test_requests_reuse_one_database_connection(tmp_path, max_age, connections):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
           "DJANGO_SETTINGS_MODULE": "claworc_site.settings"}
    env.pop("DATABASE_CONN_MAX_AGE", None)
    if max_age is not None:
        env["DATABASE_CONN_MAX_AGE"] = max_age  # 0: a connection per request, as before
    out = subprocess.run([sys.executable, "-c", _CONNECTIONS_PER_REQUEST], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(connections)]


def test_persistent_connections_are_health_checked():
    from django.conf import settings

    assert settings.DATABASES["default"]["CONN_MAX_AGE"] == 60
    assert settings.DATABASES["default"]["CONN_HEALTH_CHECKS"] is True


def test_kubernetes_cluster_settings_are_parsed_and_checked():
    import environ
    from django.core.exceptions import ImproperlyConfigured

    from claworc_site.config import env_json_list, env_labels, env_list, node_port_range

    env = environ.Env()
    values = {
        "L": " regcred, ,other ", "S": "disk=ssd, zone = a", "BAD_S": "disk",
        "T": '[{"key": "agents", "operator": "Exists"}]', "BAD_T": '{"key": 1}',
        "CLAWORC_K8S_NODE_PORT_RANGE": "20000-40000",
    }
    with mock.patch.dict(os.environ, values):
        assert env_list(env, "L") == ["regcred", "other"]
        assert env_labels(env, "S") == {"disk": "ssd", "zone": "a"}
        assert env_json_list(env, "T") == [{"key": "agents", "operator": "Exists"}]
        assert node_port_range(env) == (20000, 40000)
        with pytest.raises(ImproperlyConfigured, match="BAD_S must be key=value pairs"):
            env_labels(env, "BAD_S")
        with pytest.raises(ImproperlyConfigured, match="BAD_T must be a JSON list of objects"):
            env_json_list(env, "BAD_T")
    with mock.patch.dict(os.environ, {"CLAWORC_K8S_NODE_PORT_RANGE": "32767"}):
        with pytest.raises(ImproperlyConfigured, match="CLAWORC_K8S_NODE_PORT_RANGE"):
            node_port_range(env)
def _env(**values):
    return type("Env", (), {"str": lambda self, name, default="": values.get(name, default)})()


def test_site_id_is_generated_once_into_the_data_directory(tmp_path):
    first = config.site_id(_env(), tmp_path / "data")
    assert first.startswith("site-")
    assert (tmp_path / "data" / "site-id").read_text().strip() == first
    assert config.site_id(_env(), tmp_path / "data") == first  # every process reads the same
    assert config.site_id(_env(CLAWORC_SITE_ID="site-prod"), tmp_path / "data") == "site-prod"
    with pytest.raises(config.ImproperlyConfigured, match="lowercase letters"):
        config.site_id(_env(CLAWORC_SITE_ID="Prod Site"), tmp_path / "data")


def test_secrets_generated_by_make_run_are_read_from_the_data_directory(tmp_path):
    """What `manage.py` from a plain shell relies on: no SECRET_KEY or key in the environment."""
    (tmp_path / "secret.key").write_text("from-the-data-dir-secret\n")
    key = "y9v4m3b0l9cH3A3dB2mYk1V3tW5nQ0xRzJ8sE6fG7hI="
    (tmp_path / "encryption.key").write_text(key + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("SECRET_KEY", "CLAWORC_ENCRYPTION_KEY")}
    env["CLAWORC_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings;"
         " print(settings.SECRET_KEY, settings.CLAWORC_ENCRYPTION_KEY)"],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "claworc_site.settings"},
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["from-the-data-dir-secret", key]
