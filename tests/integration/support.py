"""A whole Claworc stack in subprocesses for end-to-end tests: gunicorn, Celery workers (and beat),
on a database they share with each other and with the test (a SQLite file or a fresh PostgreSQL
database), on Redis or the embedded SQLite broker, against the real Docker daemon.

The test process never imports the stack's Django state: it talks HTTP to the web process, reads
the shared database with plain SQL, and inspects Docker directly, as a person would.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import requests

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "bot-t4-"
PORT_START, PORT_END = 32000, 32399
PORT_BLOCK = 80  # each stack takes a free block of the range: 40 pairs
REDIS_DB = 13  # this suite's Redis database; each stack has its own queue in it
ADMIN_USER, ADMIN_PASSWORD = "t4admin", "t4-admin-password-9f3k"
# Generous: the machine (and its Docker daemon) may be busy with other work.
HTTP_TIMEOUT = 60


def wait_for(what: str, check, timeout: float = 60.0, interval: float = 0.2):
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_answers(port: int) -> str:
    """The body served on 127.0.0.1:`port` ("" when nothing answers)."""
    try:
        return requests.get(f"http://127.0.0.1:{port}/", timeout=2).text
    except requests.RequestException:
        return ""


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


class _FormParser(HTMLParser):
    """The fields a browser would submit from the form with id `form_id`, with their defaults."""

    def __init__(self, form_id: str):
        super().__init__()
        self.form_id, self.inside, self.fields = form_id, False, []
        self._select = self._textarea = None
        self._select_first = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or not a.get("name") and tag != "option":
            return
        if tag == "input":
            kind = (a.get("type") or "text").lower()
            if kind in {"submit", "button", "file"}:
                return
            if kind in {"checkbox", "radio"} and "checked" not in a:
                return
            self.fields.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "textarea":
            self._textarea = [a["name"], ""]
        elif tag == "select":
            self._select, self._select_first = a["name"], None
        elif tag == "option" and self._select:
            value = a.get("value", "")
            if self._select_first is None:
                self._select_first = value
            if "selected" in a:
                self.fields.append((self._select, value))
                self._select_first = False

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea[1] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append(tuple(self._textarea))
            self._textarea = None
        elif tag == "select" and self._select:
            if self._select_first not in (None, False):
                self.fields.append((self._select, self._select_first))
            self._select = None


def form_fields(html: str, form_id: str) -> list[tuple[str, str]]:
    parser = _FormParser(form_id)
    parser.feed(html)
    return parser.fields


def csrf_token(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


class Admin:
    """A staff member's browser session against the admin, over real HTTP."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self.http = requests.Session()

    def login(self) -> None:
        page = self.http.get(f"{self.base}/admin/login/", timeout=HTTP_TIMEOUT)
        page.raise_for_status()
        reply = self.http.post(
            f"{self.base}/admin/login/?next=/admin/", timeout=HTTP_TIMEOUT,
            data={"csrfmiddlewaretoken": csrf_token(page.text), "username": ADMIN_USER,
                  "password": ADMIN_PASSWORD, "next": "/admin/"},
            headers={"Referer": f"{self.base}/admin/login/"},
        )
        assert reply.url.rstrip("/").endswith("/admin"), f"login failed: {reply.url}"

    def add_instance(self, display_name: str, **overrides: str) -> requests.Response:
        url = f"{self.base}/admin/instances/instance/add/"
        page = self.http.get(url, timeout=HTTP_TIMEOUT)
        page.raise_for_status()
        data = dict(form_fields(page.text, "instance_form"))
        data.update(display_name=display_name, **overrides)
        data["_save"] = "Save"
        reply = self.http.post(url, data=data, timeout=HTTP_TIMEOUT, headers={"Referer": url})
        assert reply.status_code == 200 and "was added successfully" in reply.text, (
            f"adding {display_name} failed: {reply.status_code}\n{_errors(reply.text)}")
        return reply

    def change_instance(self, pk: int, **changes: str) -> requests.Response:
        """Edit an instance's form as a person would: its current values, with `changes`."""
        url = f"{self.base}/admin/instances/instance/{pk}/change/"
        page = self.http.get(url, timeout=HTTP_TIMEOUT)
        page.raise_for_status()
        data = dict(form_fields(page.text, "instance_form"))
        data.update(changes)
        data["_save"] = "Save"
        reply = self.http.post(url, data=data, timeout=HTTP_TIMEOUT, headers={"Referer": url})
        assert reply.status_code == 200 and "was changed successfully" in reply.text, (
            f"changing {pk} failed: {reply.status_code}\n{_errors(reply.text)}")
        return reply

    def action(self, action: str, pks: list[int], **extra: str) -> str:
        """Run a changelist action; return the text of the messages it showed."""
        url = f"{self.base}/admin/instances/instance/"
        page = self.http.get(url, timeout=HTTP_TIMEOUT)
        page.raise_for_status()
        reply = self.http.post(url, timeout=HTTP_TIMEOUT, headers={"Referer": url}, data={
            "csrfmiddlewaretoken": csrf_token(page.text), "action": action, "index": "0",
            "select_across": "0", "_selected_action": [str(pk) for pk in pks], **extra,
        })
        reply.raise_for_status()
        found = re.findall(r'<li class="(?:success|warning|info|error)">(.*?)</li>', reply.text,
                           flags=re.S)
        return " ".join(found)


def _errors(html: str) -> str:
    return "\n".join(re.findall(r'<ul class="errorlist[^"]*">(.*?)</ul>', html, flags=re.S))


class Database:
    """Plain SQL reads of the stack's database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str):
        self.url = url

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self.url.startswith("sqlite:"):
            path = self.url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
                return conn.execute(sql.replace("%s", "?"), params).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple = ()) -> None:
        """One committed write, as a person at a database shell would make it."""
        if self.url.startswith("sqlite:"):
            path = self.url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
                conn.execute(sql.replace("%s", "?"), params)
                conn.commit()
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql, params)

    def instance(self, name: str) -> dict | None:
        found = self.rows(
            "SELECT i.id, i.status, i.status_message, i.desired_state, p.port_chrome, "
            "p.port_terminal FROM instances_instance i LEFT JOIN instances_portallocation p "
            "ON p.instance_id = i.id WHERE i.name = %s", (name,))
        if not found:
            return None
        keys = ("id", "status", "status_message", "desired_state", "port_chrome",
                "port_terminal")
        return dict(zip(keys, found[0], strict=True))

    def activities(self, name: str) -> list[tuple[str, str, str, str]]:
        return self.rows(
            "SELECT action, result, actor, message FROM instances_activity "
            "WHERE instance_name = %s ORDER BY id", (name,))


def free_port_block() -> tuple[int, int]:
    """A block of PORT_START..PORT_END in which nothing listens: runs of this suite at the same
    time (on a shared machine) do not hand out the same host ports."""
    blocks = list(range(PORT_START, PORT_END, PORT_BLOCK))
    random.shuffle(blocks)
    for start in blocks:
        end = min(start + PORT_BLOCK - 1, PORT_END)
        if all(port_is_closed(p) for p in range(start, end + 1)):
            return start, end
    raise AssertionError(f"no free block of {PORT_BLOCK} ports in {PORT_START}-{PORT_END}")


class Stack:
    """Web and worker processes sharing one database and one broker.

    Instances of a stack are named `prefix` + something (`bot-t4-<tag>-…`), so that runs of
    this suite at the same time neither see nor clean up each other's containers.
    """

    def __init__(self, tmp: Path, *, broker: str, database_url: str, agent_image: str,
                 reconcile_interval: int = 3600, extra_env: dict[str, str] | None = None):
        self.tag = uuid.uuid4().hex[:4]
        self.prefix = f"{PREFIX}{self.tag}-"
        self.queue = f"claworc-t4-{self.tag}"
        self.port_start, self.port_end = free_port_block()
        self.tmp = tmp
        self.database_url = database_url
        self.db = Database(database_url)
        self.broker_url = broker
        self.procs: dict[str, subprocess.Popen] = {}
        self.base_url = ""
        data_dir = tmp / "data"
        (data_dir / "configs").mkdir(parents=True, exist_ok=True)
        self.config_dir = data_dir / "configs"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CELERY_", "DATABASE_URL", "PYTEST_"))}
        env.update({
            "DJANGO_SETTINGS_MODULE": "claworc_site.settings",
            "DATABASE_URL": database_url,
            "CELERY_BROKER_URL": broker,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "CLAWORC_DATA_DIR": str(data_dir),
            "CLAWORC_DOCKER_CONFIG_DIR": str(self.config_dir),
            "CLAWORC_DOCKER_PRIVILEGED": "false",
            "CLAWORC_DOCKER_INIT": "true",
            "CLAWORC_AGENT_IMAGE": agent_image,
            "CLAWORC_NODE_IP": "127.0.0.1",
            "CLAWORC_PORT_START": str(self.port_start),
            "CLAWORC_PORT_END": str(self.port_end),
            "CLAWORC_RECONCILE_INTERVAL": str(reconcile_interval),
            "CLAWORC_TASK_TIME_LIMIT": "10",
            "CLAWORC_CREATING_TIMEOUT": "300",
            "CLAWORC_ADMIN_USER": ADMIN_USER,
            "CLAWORC_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "DEBUG": "false",
            "PYTHONUNBUFFERED": "1",
            # Stand-ins use next to nothing of the 500m / 4Gi they ask for, and detection records
            # this machine's few CPUs: a generous budget, so that only the capacity tests (which
            # size their own) are about it.
            "CLAWORC_CPU_OVERCOMMIT": "100",
            "CLAWORC_MEMORY_OVERCOMMIT": "100",
            **(extra_env or {}),
        })
        self.env = env

    # --- processes ------------------------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}"
        return done.stdout

    def prepare(self) -> None:
        """Schema, the admin account and the Docker backend, as `make run` sets them up."""
        self.manage("migrate", "--no-input", "-v", "0")
        self.manage("ensure_admin")
        self.manage("detect_backend", "--set", "docker")

    def _spawn(self, key: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{key}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: kill -9 takes it all
        proc.log = log
        self.procs[key] = proc
        return proc

    def start_web(self) -> str:
        port = free_port()
        # As the Procfile runs it: the ASGI app under uvicorn's worker (pages and websockets).
        self._spawn("web", [str(Path(sys.executable).parent / "gunicorn"),
                            "claworc_site.asgi:application",
                            "--worker-class", "uvicorn_worker.UvicornWorker",
                            "--bind", f"127.0.0.1:{port}", "--workers", "3", "--timeout", "60"])
        self.base_url = f"http://127.0.0.1:{port}"
        wait_for("the web process", lambda: requests.get(
            f"{self.base_url}/admin/login/", timeout=2).status_code == 200, timeout=30)
        return self.base_url

    def start_worker(self, key: str = "worker", *, beat: bool = False,
                     concurrency: int = 2, app: str = "claworc_site") -> subprocess.Popen:
        cmd = [str(Path(sys.executable).parent / "celery"), "-A", app, "worker",
               "--loglevel", "INFO", "--pool", "prefork", "--concurrency", str(concurrency),
               "--hostname", f"{key}-{uuid.uuid4().hex[:6]}@%h",
               "--without-gossip", "--without-mingle"]
        if beat:
            cmd += ["--beat", "--schedule", str(self.tmp / f"beat-{key}")]
        proc = self._spawn(key, cmd)
        wait_for(f"{key} to be ready", lambda: b"ready." in (self.tmp / f"{key}.log").read_bytes()
                 or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, f"{key} exited:\n{self.log(key)}"
        return proc

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(key)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        proc.log.close()

    def stop(self) -> None:
        for key in list(self.procs):
            proc = self.procs[key]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(key)
                continue
            self.procs.pop(key).log.close()

    def log(self, key: str, tail: int = 6000) -> str:
        path = self.tmp / f"{key}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"----- {p.stem} -----\n{self.log(p.stem)}"
                         for p in sorted(self.tmp.glob("*.log")))

    # --- tasks and state ------------------------------------------------------------------------

    def send_task(self, name: str, *args) -> None:
        from celery import Celery

        app = Celery(broker=self.broker_url)
        app.conf.task_default_queue = self.queue
        try:
            app.send_task(name, args=list(args))
        finally:
            app.close()

    def reconcile_all_once(self) -> str:
        """Run one reconcile_all (in a fresh process); its repairs go to the workers."""
        return self.manage("shell", "-c",
                           "from instances.tasks import reconcile_all; print(reconcile_all())")

    def wait_running(self, docker_client, name: str, timeout: float = 60) -> dict:
        """Until the DB says running and both published ports answer; the instance's row."""
        def ready():
            row = self.db.instance(name)
            if not row or row["status"] != "running" or not row["port_chrome"]:
                return None
            container = docker_client.containers.get(name)
            if container.status != "running":
                return None
            if "chrome vnc" in port_answers(row["port_chrome"]) and "terminal vnc" in (
                    port_answers(row["port_terminal"])):
                return row
            return None

        try:
            return wait_for(f"{name} to run with both ports answering", ready, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nrow: {self.db.instance(name)}\n{self.logs()}") from None


    def step_budget(self) -> float:
        """Seconds one step of the worker may take on a loaded machine: a task run to this
        stack's time limit twice (a retry), with time to be picked up."""
        return 3 * int(self.env["CLAWORC_TASK_TIME_LIMIT"])

    def lease_ttl(self) -> float:
        """Seconds a killed worker's lease holds its instance, by the production formula applied
        to this stack's task time limit."""
        from django.test import override_settings

        from instances.services.leases import lease_ttl

        with override_settings(CLAWORC_TASK_TIME_LIMIT=int(self.env["CLAWORC_TASK_TIME_LIMIT"])):
            return lease_ttl().total_seconds()

    def name(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"


def redis_broker(redis_url: str) -> str:
    return f"{redis_url.rstrip('/')}/{REDIS_DB}"


def redis_drop_queue(broker_url: str, queue: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url)
    client.delete(queue, *client.keys(f"{queue}\x06*"))  # the queue and its priority lists


@contextlib.contextmanager
def postgres_database(postgres_url: str):
    """A fresh database on the PostgreSQL server, dropped afterwards; yields its URL."""
    import psycopg

    name = f"claworc_t4_{uuid.uuid4().hex[:10]}"
    parsed = urlparse(postgres_url)
    admin_url = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield parsed._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def docker_cleanup(client, prefix: str) -> None:
    """Remove the containers and volumes of instances named `prefix`…; never by label."""
    import docker.errors

    def leftovers():
        containers, volumes = docker_objects(client, prefix)
        for box in containers:
            # 404: already gone; 409: a removal is already in progress.
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.api.remove_container(box.name, force=True)
        for volume in volumes:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                client.api.remove_volume(volume, force=True)
        return docker_objects(client, prefix) == ([], [])

    wait_for(f"{prefix}* containers and volumes to be removed", leftovers, timeout=60,
             interval=1)


@dataclass(frozen=True)
class Box:
    """One container as the Docker daemon lists it."""

    name: str
    state: str
    ports: tuple[int, int] | None  # published (Chrome, Terminal) host ports


def docker_objects(client, name_prefix: str) -> tuple[list[Box], list[str]]:
    """Containers and volume names of instances named `name_prefix`…, in one list call each
    (the daemon is shared and may be busy: no inspect per container)."""
    boxes = []
    for entry in client.api.containers(all=True, filters={"name": name_prefix}):
        name = entry["Names"][0].lstrip("/")
        if not name.startswith(name_prefix):
            continue
        published = {p["PrivatePort"]: p["PublicPort"] for p in entry.get("Ports") or []
                     if p.get("PublicPort")}
        ports = (published[6081], published[6082]) if len(published) == 2 else None
        boxes.append(Box(name=name, state=entry["State"], ports=ports))
    volumes = sorted(v["Name"] for v in client.api.volumes().get("Volumes") or []
                     if v["Name"].startswith(f"claworc-{name_prefix}"))
    return sorted(boxes, key=lambda b: b.name), volumes


def published_ports(container) -> tuple[int, int]:
    ports = container.attrs["HostConfig"]["PortBindings"]
    return int(ports["6081/tcp"][0]["HostPort"]), int(ports["6082/tcp"][0]["HostPort"])
