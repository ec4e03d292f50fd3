"""The websocket half of the desktop proxy: an ASGI app for
`/instances/<name>/desktop/<chrome|terminal>/websockify`, routed here by claworc_site/asgi.py.

It signs the browser in from its Django session cookie, refuses cross-site pages (Origin), opens
a DesktopSession (permission, running instance, per-user cap), connects to the instance's noVNC
websocket within CLAWORC_DESKTOP_CONNECT_TIMEOUT and copies frames both ways. Every
CLAWORC_DESKTOP_CHECK_INTERVAL it vouches for the session and re-checks permission and instance,
closing cleanly when either is gone; it also closes after CLAWORC_DESKTOP_IDLE_TIMEOUT without
traffic. A refusal before the handshake reaches the browser as HTTP 403.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from datetime import UTC, datetime
from importlib import import_module
from urllib.parse import urlsplit

import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.db import close_old_connections
from django.http import HttpRequest
from django.http.cookie import parse_cookie

from instances.models import Instance
from orchestrators.base import OrchestratorError

from . import services, upstream

logger = logging.getLogger(__name__)

WEBSOCKET_PATH = re.compile(
    r"^/instances/(?P<name>[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)/desktop/"
    r"(?P<desktop>chrome|terminal)/websockify/?$"
)


def _db(fn):
    """Run `fn` in Django's sync thread like a request would: fresh connections around it."""

    def call(*args, **kwargs):
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(functools.wraps(fn)(call))


def user_from_cookie(cookie_header: str):
    """The user the session cookie signs in (AnonymousUser when none or expired)."""
    request = HttpRequest()
    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(
        parse_cookie(cookie_header).get(settings.SESSION_COOKIE_NAME))
    return get_user(request)


def origin_allowed(headers: dict[str, str]) -> bool:
    """A browser names the page that opened the socket: it must be this site (or a trusted
    origin), so another site cannot ride a signed-in user's cookie into a desktop."""
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser: it has no one else's cookie to ride on
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    return urlsplit(origin).netloc.lower() == headers.get("host", "").lower()


def _open(cookie: str, name: str, desktop: str, client: str, user_agent: str):
    user = user_from_cookie(cookie)
    session = services.desktop_session_open(user=user, instance_name=name, desktop=desktop,
                                            client_address=client, user_agent=user_agent)
    instance = Instance.objects.select_related("ports").get(pk=session.instance_id)
    return session.pk, instance


class _Traffic:
    def __init__(self):
        self.to_desktop = 0
        self.from_desktop = 0
        self.last = time.monotonic()
        self.last_at: datetime | None = None

    def note(self, size: int, *, to_desktop: bool) -> None:
        if to_desktop:
            self.to_desktop += size
        else:
            self.from_desktop += size
        self.last = time.monotonic()
        self.last_at = datetime.now(tz=UTC)


async def desktop_websocket(scope, receive, send) -> None:
    """ASGI app for one websocket connection to a desktop."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    match = WEBSOCKET_PATH.match(scope.get("path", ""))
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if match is None:
        await send({"type": "websocket.close", "code": 4404})
        return
    if not origin_allowed(headers):
        logger.warning("desktop websocket refused: origin %s is not this site",
                       headers.get("origin"))
        await send({"type": "websocket.close", "code": 4403})
        return
    name, desktop = match["name"], match["desktop"]
    client = (scope.get("client") or ("", 0))[0] or ""
    try:
        session_id, instance = await _db(_open)(
            headers.get("cookie", ""), name, desktop, client, headers.get("user-agent", ""))
    except services.DesktopRefused as exc:
        logger.info("desktop %s %s refused for %s: %s", name, desktop, client, exc)
        await send({"type": "websocket.close", "code": 4000 + exc.status})
        return

    traffic = _Traffic()
    close = _db(services.desktop_session_close)
    try:
        host, port = await _db(upstream.desktop_address)(instance, desktop)
        remote = await websockets.connect(
            f"ws://{host}:{port}/websockify",
            subprotocols=scope.get("subprotocols") or None,
            open_timeout=settings.CLAWORC_DESKTOP_CONNECT_TIMEOUT,
            ping_interval=settings.CLAWORC_DESKTOP_PING_INTERVAL or None,
            ping_timeout=settings.CLAWORC_DESKTOP_PING_INTERVAL or None,
            close_timeout=5, max_size=None, compression=None,
        )
    except (OrchestratorError, OSError, TimeoutError, websockets.WebSocketException) as exc:
        upstream.forget(name)
        reason = f"could not reach the desktop: {exc or type(exc).__name__}"
        logger.warning("desktop session %s (%s %s): %s", session_id, name, desktop, reason)
        await close(session_id=session_id, reason=reason)
        await send({"type": "websocket.close", "code": 4502})
        return

    await send({"type": "websocket.accept", "subprotocol": remote.subprotocol})
    reason, code, browser_gone = await _pump(session_id, receive, send, remote, traffic)
    await remote.close()
    if not browser_gone and reason.startswith(("the desktop connection broke",
                                               "closed by the desktop")):
        # Stopping the instance takes its desktop down, often before the watchdog's next look:
        # say that rather than "the connection broke".
        closing = await _db(services.desktop_session_heartbeat)(
            session_id=session_id, active_at=traffic.last_at,
            bytes_to_desktop=traffic.to_desktop, bytes_from_desktop=traffic.from_desktop)
        if closing is not None:
            reason, code = closing.reason, closing.code
    # Recorded before the browser hears of it: whoever sees the close can read why at once.
    await close(session_id=session_id, reason=reason, bytes_to_desktop=traffic.to_desktop,
                bytes_from_desktop=traffic.from_desktop, active_at=traffic.last_at)
    if not browser_gone:
        await send({"type": "websocket.close", "code": code, "reason": reason[:120]})


async def _pump(session_id, receive, send, remote, traffic: _Traffic):
    """Copy frames both ways until one side ends or the watchdog says stop.

    Returns (reason, close code for the browser, whether the browser already left).
    """

    async def browser_to_desktop():
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return "closed by the browser", services.CLOSE_NORMAL, True
            data = message.get("bytes")
            if data is None:
                data = message.get("text") or ""
            traffic.note(len(data), to_desktop=True)
            try:
                await remote.send(data)
            except websockets.ConnectionClosed:
                return "closed by the desktop", services.CLOSE_GOING_AWAY, False

    async def desktop_to_browser():
        try:
            async for data in remote:
                traffic.note(len(data), to_desktop=False)
                key = "bytes" if isinstance(data, bytes) else "text"
                await send({"type": "websocket.send", key: data})
        except websockets.ConnectionClosedError as exc:
            return f"the desktop connection broke ({exc})", services.CLOSE_GOING_AWAY, False
        except OSError:  # the browser left while a frame was on its way
            return "closed by the browser", services.CLOSE_NORMAL, True
        return "closed by the desktop", services.CLOSE_GOING_AWAY, False

    async def watchdog():
        heartbeat = _db(services.desktop_session_heartbeat)
        interval = max(1, settings.CLAWORC_DESKTOP_CHECK_INTERVAL)
        idle = settings.CLAWORC_DESKTOP_IDLE_TIMEOUT
        while True:
            await asyncio.sleep(interval)
            closing = await heartbeat(session_id=session_id, active_at=traffic.last_at,
                                      bytes_to_desktop=traffic.to_desktop,
                                      bytes_from_desktop=traffic.from_desktop)
            if closing is not None:
                return closing.reason, closing.code, False
            if idle and time.monotonic() - traffic.last > idle:
                return f"idle for {idle} s", services.CLOSE_NORMAL, False

    tasks = [asyncio.ensure_future(job()) for job in
             (browser_to_desktop, desktop_to_browser, watchdog)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(iter(done))
    if first.cancelled() or first.exception() is not None:
        exc = None if first.cancelled() else first.exception()
        logger.warning("desktop session %s failed: %r", session_id, exc)
        return f"proxy error: {type(exc).__name__}", 1011, False
    return first.result()
