"""`make run` as a new user runs it: web, worker and beat come up; Ctrl-C stops all three."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import websockets
import websockets.sync.client

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.worker]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_script_starts_web_worker_and_beat_and_ctrl_c_stops_them(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLAWORC_", "DJANGO_")) and k not in {"SECRET_KEY", "DEBUG"}}
    env.update(CLAWORC_DATA_DIR=str(tmp_path / "data"), CLAWORC_BIND=f"127.0.0.1:{port}",
               CLAWORC_ADMIN_PASSWORD="tried-as-a-new-user")
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_text()
            if "worker@" in text and " ready." in text and "beat: Starting" in text:
                try:
                    health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
                    break
                except requests.ConnectionError:
                    pass
            time.sleep(0.5)
        text = log.read_text()
        assert health is not None and health.status_code == 200, text[-3000:]
        assert health.json()["database"]["ok"] is True
        assert "Created admin user 'admin'" in text
        # Its own data directory holds the embedded database, broker and generated keys.
        data = tmp_path / "data"
        for name in ("claworc.sqlite3", "celery-broker.sqlite3", "secret.key", "encryption.key"):
            assert (data / name).exists(), name
        assert f"Admin password (generated at the first start): {data}/admin-password" in text \
            or "CLAWORC_ADMIN_PASSWORD" in text
        assert "Reset an admin password: .venv/bin/python manage.py changepassword admin" in text
        _manage_py_works_from_a_plain_shell(data)
        login = requests.get(f"http://127.0.0.1:{port}/admin/login/", timeout=5)
        assert login.status_code == 200 and "csrfmiddlewaretoken" in login.text
        # The same process answers websockets (the desktop proxy): anonymous is refused.
        with pytest.raises(websockets.InvalidStatus) as refused:
            websockets.sync.client.connect(
                f"ws://127.0.0.1:{port}/instances/bot-x/desktop/chrome/websockify",
                open_timeout=10).close()
        assert refused.value.response.status_code == 403

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        proc.wait(timeout=60)
        text = log.read_text()
        for role in ("web.1", "worker.1", "beat.1"):
            assert f"{role} stopped" in text, text[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    leftovers = subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}"], capture_output=True)
    assert leftovers.returncode == 1, leftovers.stdout


def _manage_py_works_from_a_plain_shell(data):
    """After `make run`, management commands need nothing exported: they read the same
    generated files in the data directory (only its location is given, as the test's data
    directory is not the default `data/`)."""
    plain = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
             "CLAWORC_DATA_DIR": str(data)}
    for command in (["detect_backend", "--json"], ["rotate_encryption_key"],
                    ["createsuperuser", "--no-input", "--username", "second-admin",
                     "--email", "second@example.com"]):
        env = dict(plain, DJANGO_SUPERUSER_PASSWORD="tried-as-a-new-user-2")
        done = subprocess.run([".venv/bin/python", "manage.py", *command], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert "ImproperlyConfigured" not in done.stderr, (command, done.stderr[-2000:])
        assert done.returncode == 0 or command[0] == "detect_backend", (command, done.stderr)
        if command[0] == "detect_backend":
            assert '"orchestrator_backend"' in done.stdout, done.stderr[-2000:]
