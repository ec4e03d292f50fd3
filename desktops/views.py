"""The page half of the desktop proxy: the instance's own noVNC files, served from the dashboard
behind its login and the "Can use instance desktops" permission (the websocket half is
desktops/proxy.py).

Fetching a file from the instance is a plain HTTP GET bounded by
CLAWORC_DESKTOP_CONNECT_TIMEOUT; finding where the instance is may ask the orchestrator once
(desktops/upstream.py caches it), within a few seconds.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, urlencode

import requests
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from instances.models import Instance
from orchestrators.base import OrchestratorError

from . import upstream
from .models import Desktop
from .selectors import access_mode, can_use_desktops
from .services import DesktopRefused, instance_unusable

logger = logging.getLogger(__name__)

#: Headers of the instance's answer passed on to the browser; nothing else (no cookies).
PASSED_HEADERS = ("Content-Type", "Last-Modified", "ETag")
_http = requests.Session()


def _refusal(status: int, message: str) -> HttpResponse:
    return HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")


def _allowed(request, name: str, desktop: str):
    """The instance, or the response that refuses the request."""
    user = request.user
    if not user.is_authenticated:
        return None, redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if not can_use_desktops(user):
        return None, _refusal(403, "You do not have permission to use desktops.")
    if not access_mode().proxied:
        return None, _refusal(404, "Desktops are not served through the dashboard "
                                   "(CLAWORC_DESKTOP_ACCESS=ports).")
    Desktop(desktop)
    instance = Instance.objects.select_related("ports").filter(name=name).first()
    refused: DesktopRefused | None = instance_unusable(instance, name)
    if refused is not None:
        return None, _refusal(refused.status, str(refused))
    return instance, None


def websocket_path(name: str, desktop: str) -> str:
    """The websocket's path as noVNC wants it: from the site's root, without the leading '/'."""
    return reverse("desktops:websocket", args=[name, desktop]).lstrip("/")


@never_cache
@require_safe
def desktop_open(request, name: str, desktop: str):
    """Open noVNC's page of the desktop, pointed at the dashboard's websocket."""
    instance, refusal = _allowed(request, name, desktop)
    if refusal is not None:
        return refusal
    query = urlencode({"autoconnect": "true", "resize": "scale", "reconnect": "false",
                       "path": websocket_path(instance.name, desktop)})
    return HttpResponseRedirect(f"vnc.html?{query}")


@never_cache
@require_safe
def desktop_file(request, name: str, desktop: str, path: str):
    """One of the instance's noVNC files (vnc.html, app/…, core/…), fetched from the instance."""
    instance, refusal = _allowed(request, name, desktop)
    if refusal is not None:
        return refusal
    if any(part in ("..", ".") for part in path.split("/")):
        return _refusal(400, "Bad path.")
    timeout = settings.CLAWORC_DESKTOP_CONNECT_TIMEOUT
    try:
        host, port = upstream.desktop_address(instance, desktop)
        answer = _http.get(f"http://{host}:{port}/{quote(path)}", timeout=(timeout, timeout),
                           allow_redirects=False)
    except (OrchestratorError, requests.RequestException) as exc:
        upstream.forget(instance.name)
        logger.warning("desktop %s %s: cannot fetch %s: %s", instance.name, desktop, path, exc)
        return _refusal(502, f"The desktop of {instance.name} does not answer; it may still be "
                             "starting. Try again in a moment.")
    response = HttpResponse(answer.content, status=answer.status_code)
    for header in PASSED_HEADERS:
        if header in answer.headers:
            response[header] = answer.headers[header]
    response["X-Content-Type-Options"] = "nosniff"
    return response
