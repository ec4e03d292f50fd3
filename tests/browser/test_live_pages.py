"""Live pages, one-click controls and a followed log, in Chromium (Playwright), on the real
Docker backend with the stand-in agent on 127.0.0.1:31302/31303.

No Celery worker runs here: the test carries out the queued converge itself, in a thread, as a
worker would. The ORM runs in a helper thread: Playwright's event loop forbids it in the test's
thread.

Seeing "Stopping" is made certain, not lucky: the stand-in's process ignores SIGTERM (PID 1
without an init), so Docker waits out the backend's stop timeout before it kills it, and the
page polls several times within that window (the test checks the two figures against each
other). A MutationObserver the test installs records every status text the page shows.
"""

import threading
import time

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from instances.models import Instance, PortAllocation, Setting
from orchestrators import registry
from orchestrators.base import InstanceSpec
from tests.browser.test_status_pages import ARTIFACTS, browser  # noqa: F401  (fixture)
from tests.docker_support import remove_instance_objects

NAME = "bot-t16-live"
PORT = 31302
WIDTH = 1400

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.slow]


def in_thread(fn):
    """Run `fn` (which uses the ORM) outside Playwright's event loop; return its result."""
    return in_background(fn)(120)


def in_background(fn):
    """Start `fn` (which uses the ORM) in a thread now; the returned join() gives its result."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()

    def join(timeout):
        thread.join(timeout)
        assert not thread.is_alive(), f"still running after {timeout} s"
        if "error" in box:
            raise box["error"]
        return box.get("value")
    return join


def live_wait_ms() -> int:
    """How long a page may take to show a change: a few poll intervals, plus a loaded machine."""
    return int((django_settings.CLAWORC_LIVE_INTERVAL * 5 + 15) * 1000)


@pytest.fixture
def agent(request, docker_client, agent_image, settings):
    """The stand-in agent, running. Parametrized (indirect) with False: no init process, so
    its PID 1 ignores SIGTERM and every stop waits out the stop timeout."""
    from orchestrators.docker import DockerOrchestrator

    def cleanup():
        remove_instance_objects(docker_client, NAME, settings.CLAWORC_DOCKER_CONFIG_DIR)

    cleanup()
    backend = DockerOrchestrator.from_settings(init=getattr(request, "param", True))
    observed = backend.ensure(InstanceSpec(name=NAME, image=agent_image, port_chrome=PORT,
                                           port_terminal=PORT + 1, privileged=False))
    assert observed.status == "running", observed
    yield docker_client.containers.get(NAME)
    cleanup()


@pytest.fixture
def users(transactional_db, agent, agent_image):
    """An operator (may change instances), a viewer (may only look), and the running row."""
    def make(name, *codenames):
        user = get_user_model().objects.create_user(name, password="pw-t16-browser",
                                                    is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
        client = Client()
        client.force_login(user)
        return {"name": "sessionid", "value": client.cookies["sessionid"].value,
                "domain": "localhost", "path": "/"}

    Setting.set(registry.SETTING_KEY, "docker")
    instance = Instance.objects.bulk_create([Instance(
        name=NAME, display_name="T16 Live", status="running", image=agent_image,
        status_observed_at=None)])[0]
    PortAllocation.objects.create(instance=instance, port_chrome=PORT, port_terminal=PORT + 1)
    registry.clear_cache()
    return {"operator": make("operator", "view_instance", "change_instance"),
            "viewer": make("viewer", "view_instance"), "pk": instance.pk}


def open_page(browser, live_server, cookie, path):  # noqa: F811
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    cookie = dict(cookie, domain=live_server.url.split("://")[1].split(":")[0])
    context.add_cookies([cookie])
    page = context.new_page()
    page.set_default_timeout(live_wait_ms())
    page.goto(f"{live_server.url}{path}")
    return page


def status_of(page) -> str:
    return page.locator('[data-live-field="status"]').first.inner_text()


def collapse(texts):
    """The texts in order, each repeat of the one before left out."""
    return [t for i, t in enumerate(texts) if i == 0 or texts[i - 1] != t]


@pytest.mark.parametrize("agent", [False], ids=["sigterm-ignored"], indirect=True)
def test_a_page_left_open_follows_a_stop_clicked_elsewhere_without_a_reload(
    live_server, users, browser, settings  # noqa: F811
):
    from instances import tasks
    from orchestrators.docker import STOP_TIMEOUT

    # The page polls every second. Docker waits STOP_TIMEOUT before it kills the stand-in, and
    # "Stopping" is shown from the click until the stop is done: with a window at least four
    # polls long, the page sees it even when a poll or two is late on a loaded machine.
    settings.CLAWORC_LIVE_INTERVAL = 1
    assert STOP_TIMEOUT >= 4 * settings.CLAWORC_LIVE_INTERVAL
    ARTIFACTS.mkdir(exist_ok=True)
    # A viewer leaves the instance's page open: no buttons for them.
    watcher = open_page(browser, live_server, users["viewer"], f"/instances/{NAME}/")
    assert status_of(watcher) == "Running"
    assert watcher.locator('button[name="action"]').count() == 0
    assert watcher.get_by_role("link", name="Chrome VNC", exact=True).is_visible()
    # Every status the page shows, in order; and a marker a reload would wipe out.
    watcher.evaluate("""() => {
        window.__noReload = true;
        window.__seen = [];
        const badge = document.querySelector('[data-live-field="status"]');
        new MutationObserver(() => window.__seen.push(badge.textContent))
            .observe(badge, {childList: true, characterData: true, subtree: true});
    }""")

    # Nor on the status list, where an operator has one set per row.
    listing = open_page(browser, live_server, users["viewer"], "/")
    assert listing.locator(f"#instance-{NAME}").is_visible()
    assert listing.locator('button[name="action"]').count() == 0
    listing.context.close()

    # An operator clicks Stop on the status list's row, in another session.
    operator = open_page(browser, live_server, users["operator"], "/")
    row = operator.locator(f"#instance-{NAME}")
    row.get_by_role("button", name="Stop").click()
    operator.wait_for_url(f"{live_server.url}/")
    assert "Queued stop of 1 instance" in operator.locator("#messages").inner_text()
    accepted = in_thread(lambda: Instance.objects.get(pk=users["pk"]))
    assert (accepted.desired_state, accepted.status) == ("stopped", "stopping")

    # The worker's part starts at once: nothing waits for the page to catch up.
    started = time.monotonic()
    converge = in_background(lambda: tasks.reconcile_instance.apply(args=[users["pk"]]).get())
    operator.screenshot(path=str(ARTIFACTS / "live-list-1400.png"), full_page=True)
    # The desired state changes on the open page too.
    watcher.wait_for_function(
        "() => document.querySelector('[data-live-field=\"desired\"]').textContent"
        " === 'Stopped'")
    done = live_wait_ms() / 1000 + STOP_TIMEOUT
    converge(done)
    assert time.monotonic() - started >= STOP_TIMEOUT - 1  # the window really was that long
    watcher.wait_for_function(
        "() => document.querySelector('[data-live-field=\"status\"]').textContent"
        " === 'Stopped'")
    assert watcher.evaluate("window.__noReload") is True
    assert collapse(watcher.evaluate("window.__seen")) == ["Stopping", "Stopped"]
    # Stopped: the desktop links are gone, Start is offered to the operator.
    assert not watcher.get_by_role("link", name="Chrome VNC", exact=True).is_visible()
    assert "not running" in watcher.locator("#controls").inner_text()
    operator.wait_for_function(
        f"() => !document.querySelector('#instance-{NAME} button[value=\"start\"]').hidden")
    assert operator.locator(f"#instance-{NAME} button[value='stop']").is_hidden()
    assert not row.get_by_role("link", name="Chrome VNC").is_visible()
    watcher.screenshot(path=str(ARTIFACTS / "live-instance-1400.png"), full_page=True)

    # The Start button brings it back (the converge again run here).
    row.get_by_role("button", name="Start", exact=True).click()
    operator.wait_for_url(f"{live_server.url}/")
    in_background(lambda: tasks.reconcile_instance.apply(args=[users["pk"]]).get())(done)
    watcher.wait_for_function(
        "() => document.querySelector('[data-live-field=\"status\"]').textContent"
        " === 'Running'")
    watcher.get_by_role("link", name="Chrome VNC", exact=True).wait_for(state="visible")


def test_a_followed_log_shows_a_line_written_after_the_page_opened(
    live_server, users, agent, browser  # noqa: F811
):
    page = open_page(browser, live_server, users["operator"], f"/instances/{NAME}/")
    page.get_by_role("button", name="Follow").click()
    page.wait_for_selector('#log[data-following="yes"]')
    line = f"written-after-the-page-opened-{time.monotonic_ns()}"
    assert line not in page.locator("#log-text").inner_text()
    agent.exec_run(["sh", "-c", f"echo {line} > /proc/1/fd/1"])
    page.wait_for_function(
        "line => document.getElementById('log-text').textContent.includes(line)", arg=line)
    assert "following" in page.locator("#log-state").inner_text()
    # Download: the last lines as a file.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download last").click()
    path = download.value.path()
    assert download.value.suggested_filename == f"{NAME}-log.txt"
    assert line in open(path).read()

    # The instance page's own buttons work: Restart is accepted, and the page comes back to
    # itself showing the transitional status.
    page.locator("#controls").get_by_role("button", name="Restart", exact=True).click()
    page.wait_for_url(f"**/instances/{NAME}/")
    assert "Queued restart of 1 instance" in page.locator("#messages").inner_text()
    assert status_of(page) == "Restarting"
    accepted = in_thread(lambda: Instance.objects.get(pk=users["pk"]))
    assert accepted.status == "restarting" and accepted.restart_requested > accepted.restart_done


def test_admin_pages_fit_1400_px_with_their_controls(live_server, users, browser):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    superuser = in_thread(lambda: _superuser_cookie())
    page = open_page(browser, live_server, superuser, "/admin/instances/instance/")
    assert page.title().endswith("| Claworc")
    row = page.locator("#result_list tbody tr").first
    assert "Running" in row.inner_text()
    assert row.get_by_role("link", name="Chrome VNC").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    # Every column is in view: the results table needs no sideways scrolling of its own.
    assert page.evaluate("(() => { const r = document.querySelector('#changelist .results');"
                         " return r.scrollWidth <= r.clientWidth; })()")
    page.screenshot(path=str(ARTIFACTS / "admin-changelist-1400.png"), full_page=True)

    page.goto(f"{live_server.url}/admin/instances/instance/{users['pk']}/change/")
    tools = page.locator(".claworc-tools")
    for name in ("Stop", "Restart", "Recreate"):
        assert tools.get_by_role("button", name=name, exact=True).is_visible()
    assert tools.get_by_role("button", name="Start", exact=True).is_hidden()
    assert tools.get_by_role("link", name="Open Chrome").first.is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    page.screenshot(path=str(ARTIFACTS / "admin-change-1400.png"), full_page=True)

    # The buttons work from here too, and the page follows the result without a reload.
    tools.get_by_role("button", name="Restart").click()
    page.wait_for_url("**/change/")
    assert "Queued restart of 1 instance" in page.locator(".messagelist").inner_text()


def _superuser_cookie():
    user = get_user_model().objects.create_superuser("boss", password="pw-t16-browser")
    client = Client()
    client.force_login(user)
    return {"name": "sessionid", "value": client.cookies["sessionid"].value,
            "domain": "localhost", "path": "/"}
