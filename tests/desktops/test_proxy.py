"""The websocket half of the proxy, driven as the ASGI server drives it (claworc_site.asgi), in
front of a real websocket server standing in for the instance's websockify."""

import asyncio
import contextlib

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.test import Client

from claworc_site.asgi import application
from desktops.models import DesktopSession
from instances.models import Activity, Instance, Setting

from .conftest import make_instance
from .support import free_even_port

pytestmark = pytest.mark.django_db(transaction=True)

GREETING = b"RFB 003.008\n"


@pytest.fixture(autouse=True)
def _docker_on_the_host(settings):
    # The Docker backend without a shared network reaches published ports on the host: no
    # Docker call is needed to find the desktop, so the real code path runs here.
    Setting.set("orchestrator_backend", "docker")
    settings.CLAWORC_DESKTOP_ACCESS = "proxy"
    settings.CLAWORC_DOCKER_NETWORK = ""
    settings.CLAWORC_DESKTOP_UPSTREAM_HOST = "127.0.0.1"
    settings.CLAWORC_DESKTOP_CHECK_INTERVAL = 1
    settings.CLAWORC_DESKTOP_CONNECT_TIMEOUT = 5


def cookie_for(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


class Browser:
    """One websocket connection as an ASGI server hands it to the application."""

    def __init__(self, path, *, cookie="", origin="http://testserver", subprotocols=()):
        headers = [(b"host", b"testserver"), (b"user-agent", b"pytest")]
        if cookie:
            headers.append((b"cookie", cookie.encode()))
        if origin:
            headers.append((b"origin", origin.encode()))
        self.scope = {"type": "websocket", "path": path, "headers": headers,
                      "client": ("10.9.8.7", 50000), "subprotocols": list(subprotocols),
                      "query_string": b"", "asgi": {"version": "3.0"}}
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.task = None

    async def connect(self, timeout: float = 15):
        self.task = asyncio.ensure_future(application(self.scope, self.inbox.get,
                                                      self.outbox.put))
        await self.inbox.put({"type": "websocket.connect"})
        return await self.next(timeout)

    async def next(self, timeout: float = 15):
        return await asyncio.wait_for(self.outbox.get(), timeout)

    async def send(self, data: bytes):
        await self.inbox.put({"type": "websocket.receive", "bytes": data})

    async def leave(self, timeout: float = 15):
        await self.inbox.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, timeout)


@contextlib.asynccontextmanager
async def desktop_server(port: int):
    """A websockify stand-in: greets like a VNC server, then echoes every frame reversed."""

    async def handler(ws):
        await ws.send(GREETING)
        async for message in ws:
            await ws.send(message[::-1])

    def select_subprotocol(connection, offered):
        # Like websockify: "binary" when offered, none otherwise.
        return "binary" if "binary" in offered else None

    async with websockets.serve(handler, "127.0.0.1", port,
                                select_subprotocol=select_subprotocol):
        yield


def ws_path(name, desktop="chrome"):
    return f"/instances/{name}/desktop/{desktop}/websockify"


def test_frames_flow_both_ways_and_the_session_is_recorded(desk_user):
    port = free_even_port()
    make_instance("bot-p", port=port)
    cookie = cookie_for(desk_user)

    async def scenario():
        async with desktop_server(port):
            browser = Browser(ws_path("bot-p"), cookie=cookie, subprotocols=["binary"])
            accepted = await browser.connect()
            assert accepted == {"type": "websocket.accept", "subprotocol": "binary"}
            assert (await browser.next())["bytes"] == GREETING
            await browser.send(b"hello")
            assert (await browser.next())["bytes"] == b"olleh"
            await browser.leave()

    asyncio.run(scenario())
    session = DesktopSession.objects.get()
    assert (session.username, session.instance_name, session.desktop) == ("desk", "bot-p",
                                                                          "chrome")
    assert session.client_address == "10.9.8.7" and session.user_agent == "pytest"
    assert session.close_reason == "closed by the browser"
    assert (session.bytes_to_desktop, session.bytes_from_desktop) == (5, len(GREETING) + 5)
    assert [a.action for a in Activity.objects.order_by("id")] == ["desktop opened",
                                                                   "desktop closed"]


@pytest.mark.parametrize("who", ["anonymous", "no permission"])
def test_refused_before_the_handshake_without_sign_in_or_permission(who, plain_user):
    make_instance("bot-p")
    cookie = "" if who == "anonymous" else cookie_for(plain_user)

    async def scenario():
        return await Browser(ws_path("bot-p"), cookie=cookie).connect()

    assert asyncio.run(scenario()) == {"type": "websocket.close", "code": 4403}
    assert not DesktopSession.objects.exists()


def test_a_page_of_another_site_cannot_ride_the_cookie(desk_user):
    make_instance("bot-p")
    cookie = cookie_for(desk_user)

    async def scenario():
        return await Browser(ws_path("bot-p"), cookie=cookie,
                             origin="https://evil.example").connect()

    assert asyncio.run(scenario()) == {"type": "websocket.close", "code": 4403}
    assert not DesktopSession.objects.exists()


def test_the_per_user_cap_refuses_the_next_connection(settings, desk_user):
    settings.CLAWORC_DESKTOP_MAX_SESSIONS_PER_USER = 1
    port = free_even_port()
    make_instance("bot-p", port=port)
    cookie = cookie_for(desk_user)

    async def scenario():
        async with desktop_server(port):
            first = Browser(ws_path("bot-p"), cookie=cookie)
            assert (await first.connect())["type"] == "websocket.accept"
            second = await Browser(ws_path("bot-p"), cookie=cookie).connect()
            await first.leave()
            third = Browser(ws_path("bot-p"), cookie=cookie)
            assert (await third.connect())["type"] == "websocket.accept"
            await third.leave()
            return second

    assert asyncio.run(scenario()) == {"type": "websocket.close", "code": 4429}
    assert DesktopSession.objects.count() == 2


def _remove_permission(user):
    user.user_permissions.remove(Permission.objects.get(codename="use_desktop"))


def _stop(name):
    Instance.objects.filter(name=name).update(desired_state="stopped", status="stopped")


@pytest.mark.parametrize(("change", "code", "reason"), [
    (_remove_permission, 1008, "your permission to use desktops was removed"),
    (_stop, 1001, "Instance bot-p is stopped; start it first."),
])
def test_an_open_session_closes_cleanly_when_permission_or_instance_goes(
        settings, desk_user, change, code, reason):
    port = free_even_port()
    make_instance("bot-p", port=port)
    cookie = cookie_for(desk_user)
    # Three check intervals: the watchdog's sleep plus a loaded machine.
    deadline = 3 * settings.CLAWORC_DESKTOP_CHECK_INTERVAL + 10

    async def scenario():
        async with desktop_server(port):
            browser = Browser(ws_path("bot-p"), cookie=cookie)
            assert (await browser.connect())["type"] == "websocket.accept"
            assert (await browser.next())["bytes"] == GREETING
            await sync_to_async(change)(desk_user if change is _remove_permission else "bot-p")
            closed = await browser.next(timeout=deadline)
            await asyncio.wait_for(browser.task, deadline)
            return closed

    assert asyncio.run(scenario()) == {"type": "websocket.close", "code": code,
                                       "reason": reason}
    session = DesktopSession.objects.get()
    assert session.ended_at is not None and session.close_reason == reason


def test_an_instance_that_does_not_answer_is_refused_and_recorded(desk_user):
    make_instance("bot-p", port=free_even_port())  # nothing listens there
    cookie = cookie_for(desk_user)

    async def scenario():
        return await Browser(ws_path("bot-p"), cookie=cookie).connect()

    assert asyncio.run(scenario()) == {"type": "websocket.close", "code": 4502}
    session = DesktopSession.objects.get()
    assert session.close_reason.startswith("could not reach the desktop")


def test_a_session_without_traffic_closes_after_the_idle_timeout(settings, desk_user):
    settings.CLAWORC_DESKTOP_IDLE_TIMEOUT = 1
    port = free_even_port()
    make_instance("bot-p", port=port)
    cookie = cookie_for(desk_user)
    deadline = 3 * settings.CLAWORC_DESKTOP_CHECK_INTERVAL + settings.CLAWORC_DESKTOP_IDLE_TIMEOUT

    async def scenario():
        async with desktop_server(port):
            browser = Browser(ws_path("bot-p"), cookie=cookie)
            assert (await browser.connect())["type"] == "websocket.accept"
            assert (await browser.next())["bytes"] == GREETING
            closed = await browser.next(timeout=deadline + 10)
            await asyncio.wait_for(browser.task, deadline + 10)
            return closed

    assert asyncio.run(scenario()) == {"type": "websocket.close", "code": 1000,
                                       "reason": "idle for 1 s"}
    assert DesktopSession.objects.get().close_reason == "idle for 1 s"
