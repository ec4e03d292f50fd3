"""Reads about desktops: which links to show for an instance, open sessions, last activity."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max, OuterRef, QuerySet, Subquery
from django.urls import reverse
from django.utils import timezone

from orchestrators.base import CHROME_VNC_PORT, TERMINAL_VNC_PORT, DesktopAccess

from .models import Desktop, DesktopSession

PERMISSION = "desktops.use_desktop"
CONTAINER_PORTS = {Desktop.CHROME: CHROME_VNC_PORT, Desktop.TERMINAL: TERMINAL_VNC_PORT}


@dataclass(frozen=True)
class DesktopLink:
    """One way into one desktop: `via` is "dashboard" (proxy, login) or "port" (published)."""

    desktop: str
    label: str
    url: str
    via: str
    note: str
    port: int | None = None  # the node port of a "port" link


def access_mode() -> DesktopAccess:
    return DesktopAccess(settings.CLAWORC_DESKTOP_ACCESS)


def access_description(mode: DesktopAccess | None = None) -> str:
    """One sentence for the admin and status pages: which way in is on."""
    mode = mode or access_mode()
    return {
        DesktopAccess.PORTS: "Desktops are published on the node's ports, without a login.",
        DesktopAccess.BOTH: "Desktops open through this dashboard (sign-in and permission) "
                            "and are also published on the node's ports, without a login.",
        DesktopAccess.PROXY: "Desktops open only through this dashboard (sign-in and "
                             "permission); nothing is published on the node.",
    }[mode]


def can_use_desktops(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.has_perm(PERMISSION))


def desktop_links(instance, *, user=None, mode: DesktopAccess | None = None) -> list[DesktopLink]:
    """The links to show for `instance` in the current access mode.

    Proxy links are left out for a `user` without the permission (None: not checked). Port links
    need the instance's port pair (`instance.ports`, select_related it in lists).
    """
    mode = mode or access_mode()
    links: list[DesktopLink] = []
    if mode.proxied and (user is None or can_use_desktops(user)):
        for desktop in Desktop:
            links.append(DesktopLink(
                desktop.value, desktop.label,
                reverse("desktops:open", args=[instance.name, desktop.value]),
                "dashboard", "through the dashboard, signed in"))
    ports = getattr(instance, "ports", None) if instance.pk else None
    if mode.published and ports is not None:
        for desktop, port in ((Desktop.CHROME, ports.port_chrome),
                              (Desktop.TERMINAL, ports.port_terminal)):
            links.append(DesktopLink(desktop.value, f"{desktop.label} VNC", instance.vnc_url(port),
                                     "port", f"port {port}, no login", port))
    return links


def stale_after() -> timedelta:
    """A session not vouched for in this long belongs to a dead process."""
    return timedelta(seconds=3 * max(1, settings.CLAWORC_DESKTOP_CHECK_INTERVAL))


def open_sessions(*, user=None, now: datetime | None = None) -> QuerySet[DesktopSession]:
    now = now or timezone.now()
    sessions = DesktopSession.objects.filter(ended_at__isnull=True,
                                             last_seen_at__gte=now - stale_after())
    if user is not None:
        sessions = sessions.filter(user=user)
    return sessions


def last_desktop_activity(instance) -> datetime | None:
    """When someone last used one of the instance's desktops through the dashboard."""
    return DesktopSession.objects.filter(instance=instance).aggregate(
        at=Max("last_activity_at"))["at"]


def with_last_desktop_activity(queryset: QuerySet) -> QuerySet:
    """Annotate instances with `last_desktop_activity` in the same query (lists, idle stops)."""
    latest = (DesktopSession.objects.filter(instance=OuterRef("pk"))
              .order_by("-last_activity_at").values("last_activity_at")[:1])
    return queryset.annotate(last_desktop_activity=Subquery(latest))
