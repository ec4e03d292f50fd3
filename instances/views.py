"""Read-only status pages for staff, and `GET /health` for people and load balancers.

Nothing here changes state. The list page reads the database only (a constant number of
queries, one page of rows); the instance page asks the orchestrator for its log tail under a
strict timeout, and /health pings the orchestrator the same way, so a dead daemon cannot hang
either.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import time

from django import forms
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, Q
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from orchestrators import registry
from orchestrators.base import OrchestratorError

from . import keys, services
from .keys import mask_secrets
from .models import Instance
from .run_hours import schedule_summary
from .services import capacity
from .usage import usage_display, volume_text

logger = logging.getLogger(__name__)

_STARTED = time.monotonic()
#: Seconds a page without JavaScript reloads after (<noscript> meta refresh); with JavaScript,
#: static/instances/live.js updates it in place every CLAWORC_LIVE_INTERVAL seconds instead.
REFRESH_SECONDS = 10
#: Seconds /health and the instance page wait for the orchestrator.
ORCHESTRATOR_TIMEOUT = 2.0
LOG_LINES = 50
#: Rows per page of the status list: what a page costs, whatever the fleet size.
PAGE_SIZE = 50
ACTIVITY_ROWS = 20

try:
    VERSION = importlib.metadata.version("claworc")
except importlib.metadata.PackageNotFoundError:  # running from a plain checkout
    VERSION = "unknown"


VIEW_PERMISSION = "instances.view_instance"


def can_view_instances(user) -> bool:
    """Staff with the permission the admin asks for to show instances (superusers have all)."""
    return bool(user.is_active and user.is_staff and user.has_perm(VIEW_PERMISSION))


def view_permission_required(view):
    """Anonymous users go to the admin login; signed-in users without `view_instance` get 403,
    as the admin's own instance pages give them."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        if not can_view_instances(user):
            raise PermissionDenied("Viewing instances needs the 'Can view instance' permission.")
        return view(request, *args, **kwargs)

    return wrapper


#: Every page that shows instances (live status, logs, one-click actions) asks for the same.
staff_required = view_permission_required


class ListFilter(forms.Form):
    """The status list's search box and filters, from the query string."""

    q = forms.CharField(required=False, max_length=100, strip=True, label="Search")
    status = forms.ChoiceField(required=False, choices=[("", "any status"),
                                                        *Instance.Status.choices])
    desired = forms.ChoiceField(required=False, choices=[("", "any desired state"),
                                                         *Instance.DesiredState.choices])

    def filter(self, queryset):
        if not self.is_valid():
            return queryset
        data = self.cleaned_data
        if data["q"]:
            queryset = queryset.filter(Q(name__icontains=data["q"])
                                       | Q(display_name__icontains=data["q"]))
        if data["status"]:
            queryset = queryset.filter(status=data["status"])
        if data["desired"]:
            queryset = queryset.filter(desired_state=data["desired"])
        return queryset


def status_summary() -> tuple[int, list[tuple[str, int, str]]]:
    """(total, [(label, count, value)]) over the whole fleet, from ONE aggregate query."""
    counts = Instance.objects.aggregate(
        total=Count("pk"),
        **{value: Count("pk", filter=Q(status=value)) for value in Instance.Status.values},
    )
    summary = [
        (label, counts[value], value)
        for value, label in Instance.Status.choices
        if counts[value] or value in ("running", "stopped", "error")
    ]
    return counts["total"], summary


@never_cache
@view_permission_required
def instance_list(request):
    """One page of instances (PAGE_SIZE rows), searchable and filterable: the same cost at any
    fleet size. Queries: the summary aggregate, the filtered count, the page, the backend and
    its budget (one query for both Settings)."""
    total, summary = status_summary()
    filters = ListFilter(request.GET)
    # The workload's config and keys are not shown here: not read, nor copied per row.
    rows = filters.filter(
        Instance.objects.select_related("ports", "usage")
        .defer("clawdbot_config", "encrypted_api_keys")
    ).order_by("name")
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    keep = request.GET.copy()
    keep.pop("page", None)
    backend, recorded = registry.backend_and_capacity()
    return render(request, "instances/list.html", {
        "instances": page.object_list,
        "page": page,
        "query": keep.urlencode(),
        "filters": filters,
        "filtered": filters.is_valid() and any(filters.cleaned_data.values()),
        "total": total,
        "summary": summary,
        "backend": backend,
        "budget": capacity.budget(recorded=recorded),
        "refresh": REFRESH_SECONDS,
        "liveness": services.liveness(),
        "now": timezone.now(),
    })


@never_cache
@view_permission_required
def instance_detail(request, name):
    instance = get_object_or_404(Instance.objects.select_related("ports", "usage")
                                 .with_sweep(), name=name)
    backend = registry.current_backend_name()
    log_tail, log_error = _log_tail(instance.name)
    # Only while it is not running: that is when the cluster's pulling may be the reason.
    pull_events = [] if instance.status == Instance.Status.RUNNING else _pull_events(instance.name)
    return render(request, "instances/detail.html", {
        "pull_events": pull_events,
        "instance": instance,
        "ports": getattr(instance, "ports", None),
        "backend": backend,
        "resources": [
            ("CPU", instance.cpu_request, instance.cpu_limit),
            ("Memory", instance.memory_request, instance.memory_limit),
        ],
        "volumes": [
            (suffix, volume, path, getattr(instance, f"storage_{suffix}", ""),
             volume_text(getattr(instance, "usage", None), volume))
            for suffix, volume, path in registry.volume_names(instance.name, backend)
        ],
        "config": json.dumps(mask_secrets(instance.clawdbot_config or {}), indent=2),
        "api_keys": _api_keys(instance),
        "activities": list(instance.activities.all()[:ACTIVITY_ROWS]),
        "log_tail": log_tail,
        "log_error": log_error,
        "log_lines": LOG_LINES,
        "usage": usage_display(getattr(instance, "usage", None)),
        "run_hours": schedule_summary(instance),
        "idle_after": settings.CLAWORC_IDLE_AFTER,
        "usage_interval": settings.CLAWORC_USAGE_INTERVAL,
        "download_lines": settings.CLAWORC_LOG_DOWNLOAD_LINES,
        "refresh": REFRESH_SECONDS,
        "liveness": services.liveness(),
    })


def _log_tail(name: str) -> tuple[str, str]:
    """(log text, why it is missing). Never waits longer than ORCHESTRATOR_TIMEOUT."""
    try:
        # No detection in a request: the stored or last detected backend, or nothing.
        orchestrator = registry.get_orchestrator(detect_if_needed=False)
        text = registry.call_with_timeout(
            lambda: orchestrator.logs(name, lines=LOG_LINES), ORCHESTRATOR_TIMEOUT,
            f"{orchestrator.backend_name} logs",
        )
    except OrchestratorError as exc:
        return "", str(exc)
    except Exception as exc:  # noqa: BLE001 - the page must render whatever the backend does
        logger.warning("log tail of %s failed: %s", name, type(exc).__name__)
        return "", f"could not read the log ({type(exc).__name__})"
    return text or "", ""


def _pull_events(name: str) -> list[str]:
    """The cluster's image-pull events (Kubernetes); [] where Claworc pulls itself (Docker: the
    progress is in the status message) or when the backend does not answer in time."""
    try:
        orchestrator = registry.get_orchestrator(detect_if_needed=False)
        if orchestrator.pulls_images:
            return []
        return registry.call_with_timeout(lambda: orchestrator.pull_events(name),
                                          ORCHESTRATOR_TIMEOUT,
                                          f"{orchestrator.backend_name} pull events") or []
    except Exception as exc:  # noqa: BLE001 - only informative: the page renders without it
        logger.warning("pull events of %s failed: %s", name, type(exc).__name__)
        return []


def _api_keys(instance: Instance) -> list[tuple[str, str, str, str]]:
    """(env name, label, masked value, where it comes from) per known key; never a full value."""
    overrides = keys.override_display(instance)
    globals_ = keys.global_key_display()
    rows = []
    for key_name in keys.KEY_NAMES:
        label = keys.KEYS.get(key_name, key_name)
        own, shared = overrides.get(key_name), globals_.get(key_name)
        if own is not None and own.is_set:
            rows.append((key_name, label, str(own), "this instance"))
        elif shared is not None and shared.is_set:
            rows.append((key_name, label, str(shared), "global"))
        else:
            rows.append((key_name, label, "", "not set"))
    return rows


@never_cache
def health(request):
    """JSON status: 200 when the database answers, 503 when it does not. No secrets.

    Anyone (a load balancer) gets the status, the backend's name and whether it is reachable;
    the details (daemon version, addresses, paths, database vendor, Claworc's version) only
    signed-in staff. Nothing is stored: a detection run here is not persisted.
    """
    database, db_ok = _database_state()
    live = services.liveness() if db_ok else None
    if db_ok:
        check = registry.check(timeout=ORCHESTRATOR_TIMEOUT, persist=False)
        backend = check.backend
    else:
        # The stored choice is in the database: report what this process last used.
        backend = registry.last_known_backend_name()
        check = registry.Check(backend, False, "not checked: the database is unavailable")
    status = "ok" if db_ok and check.reachable else ("degraded" if db_ok else "error")
    if live is not None and live.degraded:
        status = "degraded"
    body = {
        "status": status,
        "orchestrator_backend": backend,
        "orchestrator": {"reachable": check.reachable},
        "database": {"ok": db_ok},
    }
    user = getattr(request, "user", None)
    # With the database down no session can be read: the details stay hidden.
    if db_ok and user is not None and user.is_active and user.is_staff:
        body["orchestrator"]["detail"] = check.detail
        body["database"] = database
        body["version"] = VERSION
        body["uptime_seconds"] = round(time.monotonic() - _STARTED, 1)
        if live is not None:
            body["liveness"] = live.as_json()
    # Owed work that no worker carries out is an outage a load balancer or a probe must see.
    return JsonResponse(body, status=200 if db_ok and not (live and live.degraded) else 503)


def _database_state() -> tuple[dict, bool]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - reported by class only: messages may hold hosts
        logger.warning("health: database unavailable: %s", type(exc).__name__)
        return {"ok": False, "vendor": connection.vendor, "error": type(exc).__name__}, False
    return {"ok": True, "vendor": connection.vendor}, True
