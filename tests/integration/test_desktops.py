"""Desktops behind the login, end to end: gunicorn with the uvicorn worker, a Celery worker, the
Docker backend in proxy mode on a network shared with the bots, the stand-in agent that really
serves noVNC (Xvfb + x11vnc + websockify), and Chromium driven by Playwright.

A signed-in admin opens an instance's Chrome desktop through the dashboard and sees the remote
framebuffer; a staff member without the permission and an anonymous visitor are refused at the
same URL; nothing of the instance is published on the host; the session is recorded; and a
session open when the instance is stopped is closed cleanly.
"""

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest
import websockets
import websockets.sync.client

from tests.conftest import need_service
from tests.integration.support import ADMIN_PASSWORD, ADMIN_USER, Admin, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.worker, pytest.mark.browser, pytest.mark.novnc,
              pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
CHECK_INTERVAL = 2
# Creating a container of this larger image can take more than the stack's usual 10 s limit on a
# busy machine.
TASK_TIME_LIMIT = 60
PLAIN_USER, PLAIN_PASSWORD = "t4plain", "t4-plain-password-7q2w"


@pytest.fixture
def desktop_stack(make_stack, docker_client, novnc_agent_image):
    network = f"claworc-t4-desk-{os.getpid()}"
    stack = make_stack(broker="sqla", extra_env={
        "CLAWORC_AGENT_IMAGE": novnc_agent_image,
        "CLAWORC_DESKTOP_ACCESS": "proxy",
        "CLAWORC_DOCKER_NETWORK": network,
        "CLAWORC_DESKTOP_CHECK_INTERVAL": str(CHECK_INTERVAL),
        "CLAWORC_TASK_TIME_LIMIT": str(TASK_TIME_LIMIT),
    })
    stack.network = network
    yield stack
    stack.stop()
    from tests.integration.support import docker_cleanup

    docker_cleanup(docker_client, stack.prefix)
    with contextlib.suppress(Exception):
        docker_client.networks.get(network).remove()


def login(page, base_url, username, password):
    page.goto(f"{base_url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}/admin/**")


def session_cookie(context) -> str:
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    return f"sessionid={cookies['sessionid']}"


def websocket_status(url: str, cookie: str = "") -> int:
    """The HTTP status a websocket handshake to `url` gets (101 when it is accepted)."""
    headers = {"Cookie": cookie} if cookie else {}
    try:
        websockets.sync.client.connect(url, additional_headers=headers, open_timeout=30).close()
    except websockets.InvalidStatus as exc:
        return exc.response.status_code
    return 101


def test_desktop_through_the_dashboard_only(desktop_stack, docker_client):
    need_service("Chromium", os.path.exists(CHROMIUM), f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    stack = desktop_stack
    base = stack.start_web()
    stack.start_worker()
    stack.manage("shell", "-c", (
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user('{PLAIN_USER}', password='{PLAIN_PASSWORD}', "
        "is_staff=True, is_superuser=False)"))
    admin = Admin(base)
    admin.login()
    name = stack.name("desk")
    admin.add_instance(name)
    wait_for(f"{name} running", lambda: (stack.db.instance(name) or {}).get("status")
             == "running", timeout=stack.step_budget())
    row = stack.db.instance(name)

    # Nothing of the instance is published on the host; it sits on the shared network.
    published = subprocess.run(["docker", "port", name], capture_output=True, text=True,
                               check=True).stdout
    assert published == ""
    container = docker_client.containers.get(name)
    assert list(container.attrs["NetworkSettings"]["Networks"]) == [stack.network]

    desktop = f"{base}/instances/{name}/desktop/chrome/"
    # "running" is the container's state, a moment before noVNC inside it answers; a page
    # opened in between would show the proxy's 502 and not try again. A file through the proxy
    # opens no session.
    wait_for(f"{name}'s noVNC through the dashboard", lambda: admin.http.get(
        f"{desktop}vnc.html", timeout=10).status_code == 200, timeout=stack.step_budget())
    ws_url = base.replace("http://", "ws://") + f"/instances/{name}/desktop/chrome/websockify"
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Anonymous: the page sends to the login; the websocket is refused.
            anonymous = browser.new_context()
            page = anonymous.new_page()
            page.goto(desktop)
            assert "/admin/login/" in page.url
            assert websocket_status(ws_url) == 403

            # Staff without the permission: refused at the same URL, page and websocket.
            plain = browser.new_context()
            page = plain.new_page()
            login(page, base, PLAIN_USER, PLAIN_PASSWORD)
            answer = page.goto(desktop)
            assert answer.status == 403
            assert "permission to use desktops" in page.content()
            assert websocket_status(ws_url, session_cookie(plain)) == 403

            # The admin (a superuser holds every permission) sees the remote framebuffer.
            context = browser.new_context(viewport={"width": 1100, "height": 850})
            page = context.new_page()
            said = []  # what the page logged and failed to load: the first clue on a failure
            page.on("console", lambda m: said.append(f"console {m.type}: {m.text}"))
            page.on("requestfailed", lambda r: said.append(f"failed {r.url}: {r.failure}"))
            page.on("response", lambda r: r.status >= 400 and said.append(
                f"HTTP {r.status} {r.url}"))
            login(page, base, ADMIN_USER, ADMIN_PASSWORD)
            page.goto(desktop)
            assert page.url.startswith(f"{desktop}vnc.html?autoconnect=true")
            deadline = time.monotonic() + 60
            while True:
                try:
                    page.wait_for_function(
                        "() => { const c = document.querySelector('#noVNC_container canvas');"
                        " return c && c.width > 100 && c.height > 100; }",
                        timeout=max(1_000, (deadline - time.monotonic()) * 1_000))
                    break
                except Exception as exc:  # noqa: BLE001 - recorded, then looked at again
                    # noVNC may replace the page's context while it loads: look again until
                    # the deadline, then show what the page said.
                    if not said or said[-1] != f"wait: {exc}":
                        said.append(f"wait: {exc}")
                    if time.monotonic() < deadline:
                        continue
                    page.screenshot(path=str(ARTIFACTS / "desktop-chrome-failed.png"))
                    raise AssertionError(
                        "noVNC showed no desktop:\n" + "\n".join(said)) from None
            colours = page.wait_for_function(
                """() => {
                     const c = document.querySelector('#noVNC_container canvas');
                     const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                     const seen = new Set();
                     for (let i = 0; i < data.length; i += 4 * 97) {
                       seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
                     }
                     return seen.size > 1 ? seen.size : 0;
                   }""", timeout=60_000).json_value()
            assert colours > 1  # X's root weave, not a blank canvas
            page.screenshot(path=str(ARTIFACTS / "desktop-chrome-through-proxy.png"))
            sessions = stack.db.rows(
                "SELECT username, instance_name, desktop, client_address, ended_at "
                "FROM desktops_desktopsession ORDER BY id")
            assert sessions == [(ADMIN_USER, name, "chrome", "127.0.0.1", None)]
            context.close()
        finally:
            browser.close()

    # Closing the browser ends the session, recorded with its duration in the Activity log.
    wait_for("the session to be closed", lambda: stack.db.rows(
        "SELECT ended_at IS NOT NULL FROM desktops_desktopsession") == [(1,)],
        timeout=3 * CHECK_INTERVAL + 30)
    actions = [a for a, *_ in stack.db.activities(name) if a.startswith("desktop")]
    assert actions == ["desktop opened", "desktop closed"]

    # A session open when the instance is stopped is closed cleanly, saying why.
    with websockets.sync.client.connect(
            ws_url, additional_headers={"Cookie": f"sessionid={admin.http.cookies['sessionid']}",
                                        "Origin": base},
            open_timeout=30) as live:
        assert live.recv(timeout=30)[:4] == b"RFB "
        admin.action("stop_instances", [row["id"]])
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                live.recv(timeout=3 * CHECK_INTERVAL + 60)
    assert closed.value.rcvd is not None and closed.value.rcvd.code in (1000, 1001)
    reason = stack.db.rows("SELECT close_reason FROM desktops_desktopsession ORDER BY id DESC "
                           "LIMIT 1")[0][0]
    assert "stopped" in reason or "closed by the desktop" in reason, reason
