"""Every state change of desktop sessions: open (permission, instance, per-user cap), heartbeat
(still allowed? still running?) and close, each recorded in the instance's Activity log.

These run in the websocket proxy's worker thread (desktops/proxy.py), one short transaction
each; nothing here talks to an orchestrator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from instances.models import Activity, Instance

from .models import Desktop, DesktopSession
from .selectors import can_use_desktops, open_sessions

logger = logging.getLogger(__name__)

#: Websocket close codes the browser sees (1008 policy violation: permission gone).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008


class DesktopRefused(Exception):
    """A desktop cannot be opened; the message says why, for the person who asked.

    `status` is the HTTP status a page answers with; the websocket closes with 4000 + status.
    """

    def __init__(self, message: str, *, status: int = 403):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Closing:
    """Why an open session must end now, and the websocket close code that says it."""

    reason: str
    code: int = CLOSE_GOING_AWAY


def instance_unusable(instance: Instance | None, name: str) -> DesktopRefused | None:
    """Why the instance's desktops cannot be used now, or None."""
    if instance is None:
        return DesktopRefused(f"No instance {name}.", status=404)
    if instance.desired_state != Instance.DesiredState.RUNNING:
        return DesktopRefused(f"Instance {name} is stopped; start it first.", status=409)
    if instance.status in (Instance.Status.STOPPED, Instance.Status.DELETING):
        return DesktopRefused(f"Instance {name} is {instance.status}.", status=409)
    if getattr(instance, "ports", None) is None:
        return DesktopRefused(f"Instance {name} has no desktop ports yet.", status=409)
    return None


def _label(desktop: str) -> str:
    return Desktop(desktop).label


def desktop_session_open(*, user, instance_name: str, desktop: str, client_address: str = "",
                         user_agent: str = "") -> DesktopSession:
    """Record a new session of `user` on the instance's `desktop`, or raise DesktopRefused.

    Refused without the permission, for a missing or stopped instance, and when the user already
    holds CLAWORC_DESKTOP_MAX_SESSIONS_PER_USER open sessions.
    """
    if not can_use_desktops(user):
        raise DesktopRefused("You do not have permission to use desktops.", status=403)
    desktop = Desktop(desktop)
    cap = settings.CLAWORC_DESKTOP_MAX_SESSIONS_PER_USER
    with transaction.atomic():
        # Opens of one user take turns (the cap is a count, then an insert); on SQLite the
        # IMMEDIATE transaction already serialises every writer.
        get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
        instance = Instance.objects.select_related("ports").filter(name=instance_name).first()
        refused = instance_unusable(instance, instance_name)
        if refused is not None:
            raise refused
        held = open_sessions(user=user).count()
        if held >= cap:
            raise DesktopRefused(
                f"You already have {held} desktop sessions open, the most allowed "
                f"(CLAWORC_DESKTOP_MAX_SESSIONS_PER_USER={cap}); close one first.", status=429)
        now = timezone.now()
        session = DesktopSession.objects.create(
            instance=instance, instance_name=instance.name, user=user,
            username=user.get_username(), desktop=desktop, client_address=client_address[:64],
            user_agent=user_agent[:300], last_activity_at=now, last_seen_at=now,
        )
        Activity.objects.create(
            instance=instance, instance_name=instance.name, action="desktop opened",
            actor=user.get_username(), result=Activity.Result.INFO,
            message=f"{desktop.label} from {client_address or 'unknown address'}",
        )
    logger.info("desktop session %s: %s opened %s %s from %s", session.pk,
                user.get_username(), instance.name, desktop.value, client_address or "-")
    return session


def desktop_session_heartbeat(*, session_id: int, active_at: datetime | None = None,
                              bytes_to_desktop: int = 0,
                              bytes_from_desktop: int = 0) -> Closing | None:
    """Vouch for an open session and note its traffic; say why it must close, if it must.

    It must close when it was ended elsewhere, when its user lost the permission (or was
    deactivated or deleted), or when its instance was stopped or deleted.
    """
    session = (DesktopSession.objects.select_related("user", "instance")
               .filter(pk=session_id).first())
    if session is None or session.ended_at is not None:
        return Closing("the session was closed", CLOSE_NORMAL)
    now = timezone.now()
    fields = {"last_seen_at": now, "bytes_to_desktop": bytes_to_desktop,
              "bytes_from_desktop": bytes_from_desktop}
    if active_at is not None and active_at > session.last_activity_at:
        fields["last_activity_at"] = active_at
    DesktopSession.objects.filter(pk=session_id).update(**fields)
    # A fresh user object: permissions are cached on the instance that checked them first.
    user = get_user_model().objects.filter(pk=session.user_id).first()
    if not can_use_desktops(user):
        return Closing("your permission to use desktops was removed", CLOSE_POLICY)
    instance = Instance.objects.select_related("ports").filter(pk=session.instance_id).first()
    refused = instance_unusable(instance, session.instance_name)
    if refused is not None:
        return Closing(str(refused), CLOSE_GOING_AWAY)
    return None


def desktop_session_close(*, session_id: int, reason: str, bytes_to_desktop: int = 0,
                          bytes_from_desktop: int = 0, active_at: datetime | None = None) -> None:
    """End the session (once) and record how long it lasted and why it ended."""
    with transaction.atomic():
        session = DesktopSession.objects.select_for_update().filter(pk=session_id).first()
        if session is None or session.ended_at is not None:
            return
        now = timezone.now()
        session.ended_at = now
        session.last_seen_at = now
        if active_at is not None and active_at > session.last_activity_at:
            session.last_activity_at = active_at
        session.close_reason = reason[:200]
        session.bytes_to_desktop = bytes_to_desktop
        session.bytes_from_desktop = bytes_from_desktop
        session.save(update_fields=["ended_at", "last_seen_at", "last_activity_at",
                                    "close_reason", "bytes_to_desktop", "bytes_from_desktop"])
        seconds = int((now - session.started_at).total_seconds())
        Activity.objects.create(
            instance_id=session.instance_id, instance_name=session.instance_name,
            action="desktop closed", actor=session.username, result=Activity.Result.INFO,
            message=f"{_label(session.desktop)} from {session.client_address or 'unknown address'}"
                    f" after {_duration(seconds)}: {reason}",
        )
    logger.info("desktop session %s closed after %s s: %s", session_id, seconds, reason)


def _duration(seconds: int) -> str:
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"
