"""The desktop pages: refused anonymously and without the permission, off in ports mode, and
otherwise the instance's own noVNC files served from the dashboard."""

import functools
import http.server
import threading

import pytest
from django.urls import reverse

from orchestrators.registry import override
from tests.fakes import FakeOrchestrator

from .conftest import make_instance
from .support import free_even_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def novnc_files(tmp_path):
    """A stand-in noVNC web server on 127.0.0.1 (an even port, as instances get)."""
    (tmp_path / "vnc.html").write_text("<html><title>noVNC</title></html>")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "ui.js").write_text("export default {};")
    port = free_even_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy_mode(settings):
    settings.CLAWORC_DESKTOP_ACCESS = "proxy"


@pytest.fixture
def orch():
    with override(FakeOrchestrator()) as fake:
        yield fake


def url(name="bot-v", desktop="chrome", path=""):
    return f"/instances/{name}/desktop/{desktop}/{path}"


@pytest.mark.parametrize("path", ["", "vnc.html"])
def test_anonymous_users_are_sent_to_the_login(client, proxy_mode, path):
    make_instance("bot-v")
    response = client.get(url(path=path))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login") + "?next=")


@pytest.mark.parametrize("path", ["", "vnc.html"])
def test_staff_without_the_permission_are_refused(client, proxy_mode, plain_user, path):
    make_instance("bot-v")
    client.force_login(plain_user)
    response = client.get(url(path=path))
    assert response.status_code == 403
    assert b"permission to use desktops" in response.content


def test_in_ports_mode_the_proxy_is_off(client, settings, desk_user):
    settings.CLAWORC_DESKTOP_ACCESS = "ports"
    make_instance("bot-v")
    client.force_login(desk_user)
    response = client.get(url())
    assert response.status_code == 404
    assert b"CLAWORC_DESKTOP_ACCESS=ports" in response.content


def test_the_desktop_opens_novnc_pointed_at_the_dashboards_websocket(client, proxy_mode,
                                                                     desk_user):
    make_instance("bot-v")
    client.force_login(desk_user)
    response = client.get(url(desktop="terminal"))
    assert response.status_code == 302
    assert response["Location"] == (
        "vnc.html?autoconnect=true&resize=scale&reconnect=false"
        "&path=instances%2Fbot-v%2Fdesktop%2Fterminal%2Fwebsockify")


def test_the_instances_novnc_files_are_served_through_the_dashboard(
        client, proxy_mode, desk_user, novnc_files, orch):
    make_instance("bot-v", port=novnc_files)
    client.force_login(desk_user)
    page = client.get(url(path="vnc.html"))
    assert page.status_code == 200
    assert page.content == b"<html><title>noVNC</title></html>"
    assert page["Content-Type"].startswith("text/html")
    assert client.get(url(path="app/ui.js")).content == b"export default {};"
    assert client.get(url(path="app/missing.js")).status_code == 404
    assert orch.ops("desktop_address") == ["bot-v"]  # cached for the next files


def test_an_instance_that_does_not_answer_gives_a_clear_502(client, proxy_mode, desk_user,
                                                             orch):
    make_instance("bot-v", port=free_even_port())
    client.force_login(desk_user)
    response = client.get(url(path="vnc.html"))
    assert response.status_code == 502
    assert b"The desktop of bot-v does not answer" in response.content


def test_a_stopped_instance_is_refused(client, proxy_mode, desk_user):
    make_instance("bot-v", desired_state="stopped", status="stopped")
    client.force_login(desk_user)
    response = client.get(url())
    assert response.status_code == 409
    assert b"bot-v is stopped" in response.content


def test_an_unknown_desktop_is_not_found(client, proxy_mode, desk_user):
    make_instance("bot-v")
    client.force_login(desk_user)
    assert client.get(url(desktop="files")).status_code == 404
