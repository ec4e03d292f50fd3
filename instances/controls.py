"""One-click controls and live status for the status pages and the admin.

- `instance_action` (POST): Start, Stop, Restart or Recreate one instance through the same
  services as the admin's actions; staff with the change permission only, CSRF-protected.
- `instances_live` (GET, JSON): status, message, which buttons apply, VNC links and usage of
  the instances a page shows, from ONE query; open pages poll it (static/instances/live.js).
- `log_follow` / `log_download`: the workload's log, followed for a bounded time, or as a file.

Nothing here waits on a worker; only the log views talk to the backend, under time limits.
"""

from __future__ import annotations

import contextlib
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from orchestrators import registry
from orchestrators.base import OrchestratorError

from . import services
from .models import Instance
from .usage import format_bytes, format_cpu, volumes_text
from .views import staff_required

logger = logging.getLogger(__name__)

CHANGE_PERMISSION = "instances.change_instance"

#: action -> (service, button label, what it does, for the button's title)
ACTIONS = {
    "start": (services.instance_start, "Start", "Start the workload"),
    "stop": (services.instance_stop, "Stop", "Stop the workload; volumes are kept"),
    "restart": (services.instance_restart, "Restart", "Restart the workload"),
    "recreate": (services.instance_recreate, "Recreate",
                 "Replace the container with one built from the current settings; "
                 "volumes are kept"),
}
#: Statuses in which the instance is settled: anything else is work in progress.
_SETTLED = {"running", "stopped", "error"}
#: Most names one live request may ask about (a page shows at most this many instances).
LIVE_MAX_NAMES = 200


def can_control(user) -> bool:
    return bool(user.is_active and user.is_staff and user.has_perm(CHANGE_PERMISSION))


def actions_for(status: str, desired_state: str) -> list[str]:
    """The buttons that make sense now, in display order."""
    if status == "deleting":
        return []
    wants_running = desired_state == Instance.DesiredState.RUNNING
    shown = []
    if not wants_running or status in ("stopped", "error"):
        shown.append("start")
    if wants_running and status != "stopped":
        shown.append("stop")
    if wants_running and status in ("running", "error"):
        shown.append("restart")
    if status in _SETTLED:
        shown.append("recreate")
    return shown


def vnc_links(instance: Instance, user=None) -> list[dict[str, str]]:
    """The desktop links (Chrome, Terminal: through the dashboard and/or the node's ports, as
    CLAWORC_DESKTOP_ACCESS says) while the instance runs; none otherwise (they would not answer).
    `user` None: proxy links are not filtered by permission (the proxy checks it on use)."""
    from desktops.selectors import desktop_links

    if instance.status != Instance.Status.RUNNING:
        return []
    return [{"desktop": link.desktop, "label": link.label, "url": link.url, "note": link.note}
            for link in desktop_links(instance, user=user)]


def _safe_next(request, fallback: str) -> str:
    target = request.POST.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                       require_https=request.is_secure()):
        return target
    return fallback


@require_POST
@staff_required
def instance_action(request, name: str):
    """POST action=start|stop|restart|recreate, next=<where to go back to>."""
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        raise Http404("No such action.")
    if not can_control(request.user):
        raise PermissionDenied("You may not change instances.")
    instance = get_object_or_404(Instance.objects.only("pk", "name"), name=name)
    service = ACTIONS[action][0]
    outcome = service(instance_ids=[instance.pk], actor=request.user.get_username())
    level = messages.WARNING if outcome.skipped else messages.SUCCESS
    messages.add_message(request, level, outcome.summary())
    return redirect(_safe_next(request, reverse("instances:detail", args=[instance.name])))


@never_cache
@require_GET
@staff_required
def instances_live(request):
    """{"interval": s, "instances": {name: {...}}} for `?names=a,b,…` (at most LIVE_MAX_NAMES).

    One query (the instances with their ports and last usage sample) per call.
    """
    names = [n for n in request.GET.get("names", "").split(",") if n][:LIVE_MAX_NAMES]
    rows = (Instance.objects.filter(name__in=names).select_related("ports", "usage")
            .only("name", "status", "status_message", "desired_state",
                  "ports__port_chrome", "ports__port_terminal", "usage__cpu_cores",
                  "usage__memory_bytes", "usage__memory_limit_bytes", "usage__volume_bytes",
                  "usage__volumes", "usage__message", "usage__sampled_at")) if names else []
    controls = can_control(request.user)
    data = {}
    for instance in rows:
        usage = getattr(instance, "usage", None)
        running = instance.status == Instance.Status.RUNNING
        memory = format_bytes(usage.memory_bytes) if usage and running else ""
        if memory and usage.memory_limit_bytes:
            memory += f" / {format_bytes(usage.memory_limit_bytes)}"
        data[instance.name] = {
            "status": instance.status,
            "status_display": instance.get_status_display(),
            "message": instance.status_message,
            "desired_state": instance.desired_state,
            "desired_display": instance.get_desired_state_display(),
            "actions": actions_for(instance.status, instance.desired_state) if controls else [],
            "vnc": vnc_links(instance, request.user),
            "cpu": format_cpu(usage.cpu_cores) if usage and running else "",
            "memory": memory,
            "volumes": volumes_text(usage),
            "usage_message": usage.message if usage else "",
        }
    return JsonResponse({"interval": settings.CLAWORC_LIVE_INTERVAL, "instances": data})


# --- logs ---------------------------------------------------------------------------------------

#: Seconds a log download may wait for the backend.
LOG_DOWNLOAD_TIMEOUT = 10.0


def _orchestrator():
    return registry.get_orchestrator(detect_if_needed=False)


def _close(stream) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        # A plain generator still running in a reader thread refuses to close (ValueError);
        # a backend's followed log (orchestrators.streams.FollowedLog) closes from any thread.
        with contextlib.suppress(ValueError):
            close()


def _chunks(stream):
    # An empty first chunk sends the headers at once, so the page knows it is following even
    # while the log has nothing new to say.
    try:
        yield ""
        yield from stream
    finally:
        _close(stream)


_END = object()


async def _async_chunks(stream):
    iterator = _chunks(stream)
    # Each wait for the next line runs in a thread of its own, never on the event loop.
    read = sync_to_async(next, thread_sensitive=False)
    try:
        while (chunk := await read(iterator, _END)) is not _END:
            yield chunk
    finally:
        # The page went away (the server cancels this generator) or the follow ended: close
        # the backend's stream now, from here, rather than when a thread still waiting on it
        # sees the next line, perhaps minutes later. A followed log's close() is thread-safe.
        _close(stream)


@never_cache
@require_GET
@staff_required
def log_follow(request, name: str):
    """The last CLAWORC_LOG_FOLLOW_LINES lines, then new ones as they come, as plain text, for
    at most CLAWORC_LOG_FOLLOW_SECONDS; the page starts it again when a person asks."""
    instance = get_object_or_404(Instance.objects.only("name"), name=name)
    try:
        orch = _orchestrator()
        stream = registry.call_with_timeout(
            lambda: orch.follow_logs(instance.name, lines=settings.CLAWORC_LOG_FOLLOW_LINES,
                                     seconds=settings.CLAWORC_LOG_FOLLOW_SECONDS),
            LOG_DOWNLOAD_TIMEOUT, f"{orch.backend_name} logs")
    except OrchestratorError as exc:
        return HttpResponse(f"Log unavailable: {exc}\n", status=503,
                            content_type="text/plain; charset=utf-8")
    if isinstance(request, ASGIRequest):
        content = _async_chunks(stream)  # a sync iterator would be read whole before sending
    else:
        content = _chunks(stream)
    response = StreamingHttpResponse(content, content_type="text/plain; charset=utf-8")
    # Proxies must pass each line on at once rather than buffer the stream.
    response["X-Accel-Buffering"] = "no"
    response["X-Claworc-Follow-Seconds"] = str(settings.CLAWORC_LOG_FOLLOW_SECONDS)
    return response


@never_cache
@require_GET
@staff_required
def log_download(request, name: str):
    """The last `?lines=N` lines (default CLAWORC_LOG_FOLLOW_LINES, at most
    CLAWORC_LOG_DOWNLOAD_LINES) as a text file."""
    instance = get_object_or_404(Instance.objects.only("name"), name=name)
    try:
        lines = int(request.GET.get("lines") or settings.CLAWORC_LOG_FOLLOW_LINES)
    except ValueError:
        return HttpResponse("lines must be a whole number\n", status=400,
                            content_type="text/plain; charset=utf-8")
    lines = max(1, min(lines, settings.CLAWORC_LOG_DOWNLOAD_LINES))
    try:
        orch = _orchestrator()
        text = registry.call_with_timeout(lambda: orch.logs(instance.name, lines=lines),
                                          LOG_DOWNLOAD_TIMEOUT, f"{orch.backend_name} logs")
    except OrchestratorError as exc:
        return HttpResponse(f"Log unavailable: {exc}\n", status=503,
                            content_type="text/plain; charset=utf-8")
    response = HttpResponse(text or "", content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{instance.name}-log.txt"'
    return response
