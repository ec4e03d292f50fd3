"""A recognizable API key goes through everything Claworc does with it and must come out only in
the instance's own container environment (issue 7, "Never leaked").

The whole path is real: admin forms over HTTP, the services, the on-commit publish of Celery
messages to the configured broker, the tasks run from those messages as a worker would run them,
the Docker daemon. Captured along the way and searched for the key: every page (admin list,
change, history, global keys, settings, activity; status pages; /health), every log record of
every logger at DEBUG, every published message (body and headers) and the broker's stored copy,
task results, management command output, every database row, and `docker inspect` of every
container and volume on the daemon except the instance's own container.

Names start `bot-t7-`; host ports come from 33000-33199.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import random
import re
import secrets
import sqlite3
from io import StringIO
from pathlib import Path

import pytest
from celery import current_app
from celery.signals import before_task_publish
from cryptography.fernet import Fernet
from django.apps import apps
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from orchestrators import registry
from orchestrators.docker import DockerOrchestrator
from tests.docker_support import remove_instance_objects
from tests.html_forms import form_inputs

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NAME_RE = re.compile(r"^bot-[a-z0-9-]+$")


class Evidence:
    """Everything the key could have leaked into, labeled by where it came from."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def add(self, where: str, text) -> str:
        text = text if isinstance(text, str) else repr(text)
        self.items.append((where, text))
        return text

    def find(self, needle: str) -> list[str]:
        return [where for where, text in self.items if needle in text]


@pytest.fixture
def all_logs_at_debug(caplog):
    """caplog for every logger at DEBUG, including loggers that do not propagate."""
    touched = []
    caplog.set_level(logging.DEBUG)
    for name in ["", *list(logging.root.manager.loggerDict)]:
        logger = logging.getLogger(name)
        touched.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.DEBUG)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
    yield caplog
    for logger, level, _propagate in touched:
        logger.setLevel(level)
        if caplog.handler in logger.handlers:
            logger.removeHandler(caplog.handler)


@pytest.fixture
def published():
    """Every Celery message published, as the broker receives it (after serialization)."""
    messages = []

    def capture(sender=None, body=None, headers=None, routing_key=None, **kwargs):
        messages.append({"task": sender, "body": body, "headers": dict(headers or {})})

    before_task_publish.connect(capture, weak=False)
    yield messages
    before_task_publish.disconnect(capture)


@pytest.fixture
def t7_docker(docker_client, agent_image, tmp_path, settings):
    """The real Docker backend, ports 33000-33199, and removal of exactly what was made."""
    start = random.randrange(33000, 33180, 2)
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = start, start + 19
    settings.CLAWORC_AGENT_IMAGE = agent_image
    config_dir = tmp_path / "configs"
    orch = DockerOrchestrator(config_dir=str(config_dir), privileged=False, init=True,
                              timeout=30)
    made: list[str] = []
    with registry.override(orch):
        yield orch, config_dir, made
    for name in made:
        assert name.startswith("bot-t7-")
        remove_instance_objects(docker_client, name)


def _run_published(published, start: int, evidence: Evidence) -> int:
    """Run the tasks of the messages published since `start`, as a worker would."""
    done = start
    while done < len(published):
        message = published[done]
        done += 1
        args, kwargs, _embed = message["body"]
        for arg in [*args, *kwargs.values()]:
            assert isinstance(arg, int | bool) or (
                isinstance(arg, str) and NAME_RE.match(arg)), (
                f"task {message['task']} takes {type(arg).__name__} {arg!r}: ids only")
        task = current_app.tasks[message["task"]]
        result = task.apply(args=args, kwargs=kwargs)
        evidence.add(f"result of {message['task']}", result.result)
        evidence.add(f"traceback of {message['task']}", result.traceback or "")
    return done


def _page(client, evidence: Evidence, where: str, url: str, expect=200) -> str:
    response = client.get(url, follow=True)
    body = response.content.decode()
    assert response.status_code == expect, f"{where} {url}: {response.status_code}"
    return evidence.add(f"page {where} {url}", body)


def _post_form(client, evidence: Evidence, where: str, url: str, **fields) -> str:
    page = client.get(url)
    data = {**form_inputs(page.content.decode()).data, **fields}
    response = client.post(url, data, follow=True)
    body = response.content.decode()
    assert response.status_code == 200, f"{where}: {response.status_code}"
    assert "errornote" not in body and "errorlist" not in body, f"{where}: form refused"
    return evidence.add(f"response {where} {url}", body)


def _database_rows(evidence: Evidence) -> None:
    for model in apps.get_models():
        table = model._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from models
            evidence.add(f"table {table}", cursor.fetchall())


def _broker_store(evidence: Evidence) -> None:
    url = current_app.conf.broker_url
    if url.startswith("sqla+sqlite:///"):
        path = Path(url.removeprefix("sqla+sqlite:///"))
        if path.exists():
            with contextlib.closing(sqlite3.connect(path)) as db:
                tables = [r[0] for r in db.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'")]
                for table in tables:
                    rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
                    evidence.add(f"broker table {table}", rows)
                    for value in (v for row in rows for v in row if isinstance(v, str)):
                        evidence.add(f"broker body in {table}", _decoded_body(value))


def _decoded_body(payload: str) -> str:
    """A kombu message stores its body base64-encoded: decode it so it can be searched."""
    try:
        message = json.loads(payload)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        return body
    except (ValueError, KeyError, TypeError, AttributeError):
        return ""


def test_an_api_key_appears_nowhere_but_in_its_container(
        client, docker_client, t7_docker, all_logs_at_debug, published, settings):
    orch, config_dir, made = t7_docker
    canary = secrets.token_hex(16)
    first = f"sk-ant-LEAKCANARY-{canary}"
    rotated = f"sk-ant-LEAKCANARY-ROTATED-{secrets.token_hex(16)}"
    brave = f"brave-LEAKCANARY-{secrets.token_hex(16)}"
    brave_new = f"brave-LEAKCANARY-NEW-{secrets.token_hex(16)}"
    secrets_used = [first, rotated, brave, brave_new]
    evidence = Evidence()
    ran = 0

    admin_user = User.objects.create_superuser("t7leaks", password="pw-t7-leaks")
    client.force_login(admin_user)

    # A global Brave key, then an instance created in the admin with its own Anthropic key.
    _post_form(client, evidence, "global keys", reverse("admin:instances_api_keys"),
               key_brave_api_key=brave)
    name = f"bot-t7-leak-{secrets.token_hex(3)}"
    made.append(name)
    _post_form(client, evidence, "create", reverse("admin:instances_instance_add"),
               display_name="t7 leak", name=name, key_anthropic_api_key=first)
    ran = _run_published(published, ran, evidence)
    from instances.models import Instance

    instance = Instance.objects.get(name=name)
    container = docker_client.containers.get(name)
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["ANTHROPIC_API_KEY"] == first and env["BRAVE_API_KEY"] == brave
    first_id = container.id

    # A key change (the Anthropic override), and a global change the instance also uses.
    change_url = reverse("admin:instances_instance_change", args=[instance.pk])
    body = _post_form(client, evidence, "key change", change_url, key_anthropic_api_key=rotated)
    assert "restarts briefly" in body
    _post_form(client, evidence, "global change", reverse("admin:instances_api_keys"),
               key_brave_api_key=brave_new)
    ran = _run_published(published, ran, evidence)
    container = docker_client.containers.get(name)
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["ANTHROPIC_API_KEY"] == rotated and env["BRAVE_API_KEY"] == brave_new
    assert container.id != first_id

    # Rotation of the encryption key itself; nothing is converged (values are the same).
    settings.CLAWORC_ENCRYPTION_KEY = f"{Fernet.generate_key().decode()},"\
                                      f"{settings.CLAWORC_ENCRYPTION_KEY}"
    out = StringIO()
    call_command("rotate_encryption_key", stdout=out, stderr=out)
    evidence.add("rotate_encryption_key output", out.getvalue())
    assert "Re-encrypted 2 stored API key values" in out.getvalue()
    ran = _run_published(published, ran, evidence)

    # Every page a person can see.
    pages = {
        "instance list": reverse("admin:instances_instance_changelist"),
        "instance change": change_url,
        "instance history": reverse("admin:instances_instance_history", args=[instance.pk]),
        "global keys": reverse("admin:instances_api_keys"),
        "settings": reverse("admin:instances_setting_changelist"),
        "activity": reverse("admin:instances_activity_changelist"),
        "admin index": reverse("admin:index"),
        "status list": reverse("instances:list"),
        "status detail": reverse("instances:detail", args=[name]),
    }
    shown = {where: _page(client, evidence, where, url) for where, url in pages.items()}
    assert f"Override: ****{rotated[-4:]}." in shown["instance change"], "the mask is shown"
    assert f"****{brave_new[-4:]}" in shown["global keys"]
    health = client.get(reverse("instances:health"))
    evidence.add("/health", health.content.decode())
    # An error message: a refused form (a key entered and cleared at once) echoes nothing back.
    page = client.get(change_url)
    refused = client.post(change_url, {**form_inputs(page.content.decode()).data,
                                       "key_anthropic_api_key": first,
                                       "clear_anthropic_api_key": "on"})
    assert "Either enter a new key or clear it" in evidence.add("refused form",
                                                               refused.content.decode())

    # What was sent to and stored by the broker, and what the workers and services logged.
    assert published, "messages were published"
    for message in published:
        evidence.add(f"published {message['task']}", json.dumps(message, default=str))
    _broker_store(evidence)
    if current_app.conf.broker_url.startswith("sqla+sqlite:///"):
        bodies = [text for where, text in evidence.items if where.startswith("broker body")]
        assert any(f"[{instance.pk}]" in body for body in bodies), "broker messages were read"
    records = all_logs_at_debug.records
    assert any(name in r.getMessage() for r in records), "the instance's work was logged"
    for record in records:
        evidence.add(f"log {record.name}", f"{record.getMessage()} {record.args!r} "
                                           f"{record.exc_text or ''}")
    _database_rows(evidence)
    evidence.add("config file", (config_dir / name / "clawdbot.json").read_text())

    # Docker: every container but the instance's own, every volume.
    for summary in docker_client.api.containers(all=True):
        if summary["Id"] == container.id:
            continue
        with contextlib.suppress(Exception):
            evidence.add(f"docker inspect {summary['Names']}",
                         docker_client.api.inspect_container(summary["Id"]))
    for volume in docker_client.api.volumes().get("Volumes") or []:
        evidence.add(f"docker volume {volume['Name']}", volume)
    own = json.dumps(docker_client.api.inspect_container(container.id))
    assert rotated in own and brave_new in own

    for value in secrets_used:
        # The random part without its last 4 characters: the mask may show those, nothing more.
        random_part = value.rsplit("-", 1)[1][:-4]
        leaks = evidence.find(random_part)
        assert leaks == [], f"a key leaked into: {leaks}"
    assert len(evidence.items) > 50
