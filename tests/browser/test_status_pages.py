"""A staff member logs in through the admin login, sees a running instance with both VNC links
on the status list, follows them, and opens the instance page (Chromium driven by Playwright).

The instance runs for real: the Docker backend starts the stand-in agent on 127.0.0.1:31300/31301,
so the VNC links answer and the instance page shows the container's log.
"""

import os
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from instances.models import Instance, PortAllocation, Setting
from orchestrators import registry
from orchestrators.base import InstanceSpec
from tests.conftest import need_service
from tests.docker_support import remove_instance_objects

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
NAME = "bot-t5-browser"
PORT = 31300
PASSWORD = "browser-test-password-1"

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def running_agent(docker_client, agent_image, settings):
    """The stand-in agent running as instance NAME through the real Docker backend."""
    from orchestrators.docker import DockerOrchestrator

    def cleanup():
        remove_instance_objects(docker_client, NAME, settings.CLAWORC_DOCKER_CONFIG_DIR)

    cleanup()
    backend = DockerOrchestrator.from_settings(init=True)
    observed = backend.ensure(InstanceSpec(
        name=NAME, image=agent_image, port_chrome=PORT, port_terminal=PORT + 1,
        config={"model": "claude-sonnet", "gateway": {"authToken": "tok-browser-secret-4242"}},
        privileged=False,
    ))
    assert observed.status == "running", observed
    yield
    cleanup()


@pytest.fixture
def browser():
    need_service("Chromium", os.path.exists(CHROMIUM), f"{CHROMIUM} is missing "
                 "(apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def seeded(transactional_db, agent_image):
    """Rows only: bulk_create sends no signals, so no reconcile task races the test.

    Done before the browser starts: Playwright's event loop forbids the ORM in this thread.
    """
    ops = get_user_model().objects.create_user("ops", password=PASSWORD, is_staff=True)
    # The status pages ask for view_instance, not only is_staff.
    ops.user_permissions.add(Permission.objects.get(codename="view_instance",
                                                    content_type__app_label="instances"))
    Setting.set(registry.SETTING_KEY, "docker")
    Instance.objects.bulk_create([
        Instance(name=NAME, display_name="T5 Browser", status="running", image=agent_image,
                 status_message="Container running; noVNC answers on both ports.",
                 clawdbot_config={"model": "claude-sonnet",
                                  "gateway": {"authToken": "tok-browser-secret-4242"}}),
        Instance(name="bot-t5-stopped", display_name="T5 Stopped", status="stopped",
                 desired_state="stopped"),
    ])
    PortAllocation.objects.create(instance=Instance.objects.get(name=NAME), port_chrome=PORT,
                                  port_terminal=PORT + 1)
    registry.clear_cache()


def test_staff_sees_a_running_instance_with_both_vnc_links(
    live_server, running_agent, seeded, browser, agent_image
):
    ARTIFACTS.mkdir(exist_ok=True)
    chrome_url = f"http://127.0.0.1:{PORT}/vnc.html?autoconnect=true"
    terminal_url = f"http://127.0.0.1:{PORT + 1}/vnc.html?autoconnect=true"

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/")
    # Anonymous: the admin's login page, which brings us back to the list afterwards.
    assert "/admin/login/" in page.url
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}/")

    row = page.locator(f"#instance-{NAME}")
    assert "Running" in row.inner_text()
    assert row.get_by_role("link", name="Chrome VNC").get_attribute("href") == chrome_url
    assert row.get_by_role("link", name="Terminal VNC").get_attribute("href") == terminal_url
    assert f"{PORT}/{PORT + 1}" in row.inner_text()
    summary = page.locator("#summary").inner_text()
    assert "2 instances" in summary and "1 running" in summary and "1 stopped" in summary
    assert page.locator(".backend").inner_text() == "backend: docker"
    page.screenshot(path=str(ARTIFACTS / "status-list.png"), full_page=True)

    # Both links lead to the agent's noVNC servers (the stand-in answers on each port).
    for url, text in ((chrome_url, "chrome vnc"), (terminal_url, "terminal vnc")):
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read().decode().strip() == text

    row.get_by_role("link", name=NAME).click()
    page.wait_for_url(f"{live_server.url}/instances/{NAME}/")
    body = page.locator("main").inner_text()
    assert f"claworc-{NAME}-homebrew" in body
    assert "/home/linuxbrew/.linuxbrew" in body
    assert "claude-sonnet" in body
    assert "****4242" in body
    assert "tok-browser-secret-4242" not in page.content()
    for name in ("Chrome VNC", "Open Chrome VNC"):  # the Access card, the toolbar
        assert page.get_by_role("link", name=name, exact=True).get_attribute("href") == chrome_url
    assert f"Image: {agent_image}" in body
    assert "Log unavailable" not in body
    page.screenshot(path=str(ARTIFACTS / "status-instance.png"), full_page=True)

    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.context.add_cookies(page.context.cookies())
    phone.goto(f"{live_server.url}/")
    phone_row = phone.locator(f"#instance-{NAME}")
    assert phone_row.get_by_role("link", name="Chrome VNC").is_visible()
    # No sideways scrolling on a phone.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.screenshot(path=str(ARTIFACTS / "status-list-phone.png"), full_page=True)
