"""Start-up refuses wrong values with a message that names the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
