"""The ASGI application gunicorn serves (uvicorn worker): pages through Django, the desktop
websockets (/instances/<name>/desktop/<chrome|terminal>/websockify) through desktops/proxy.py,
so one process serves both (docs/desktops.md)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "claworc_site.settings")
django_application = get_asgi_application()

from desktops.proxy import desktop_websocket  # noqa: E402  needs the apps loaded above


async def lifespan(receive, send) -> None:
    """Django has no start-up or shutdown work of its own here: acknowledge both."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send):
    if scope["type"] == "websocket":
        return await desktop_websocket(scope, receive, send)
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    return await django_application(scope, receive, send)
