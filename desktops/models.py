"""A record of who opened which instance's desktop, from where, when and for how long."""

from django.conf import settings
from django.db import models

from instances.models import Instance
from instances.validators import NAME_MAX_LENGTH


class Desktop(models.TextChoices):
    """An instance's two desktops, each served by noVNC on its own port in the agent."""

    CHROME = "chrome", "Chrome"
    TERMINAL = "terminal", "Terminal"


class DesktopSession(models.Model):
    """One websocket connection to an instance's desktop through the dashboard.

    Open while `ended_at` is empty; `last_seen_at` is refreshed while it lives, so a session of
    a killed web process stops counting against its user's cap once it goes stale.
    """

    instance = models.ForeignKey(
        Instance, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="desktop_sessions",
    )
    instance_name = models.CharField(max_length=NAME_MAX_LENGTH, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="desktop_sessions",
    )
    username = models.CharField(max_length=150)
    desktop = models.CharField(max_length=16, choices=Desktop)
    client_address = models.CharField("from", max_length=64, blank=True, default="")
    user_agent = models.CharField(max_length=300, blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    #: Last time data went either way: what "last desktop activity" and idle stops read.
    last_activity_at = models.DateTimeField()
    #: Last time the serving process vouched for the session (liveness, not use).
    last_seen_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    close_reason = models.CharField(max_length=200, blank=True, default="")
    bytes_to_desktop = models.BigIntegerField(default=0)
    bytes_from_desktop = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-started_at", "-id"]
        # Using a desktop is its own permission: it drives the bot's browser and terminal (whose
        # environment holds the API keys), which neither viewing nor changing the instance gives.
        default_permissions = ("view",)
        permissions = [("use_desktop", "Can use instance desktops (Chrome and Terminal)")]
        indexes = [models.Index(fields=["user", "ended_at"], name="desktop_open_by_user")]

    def __str__(self):
        return f"{self.username} on {self.instance_name} {self.desktop}"

    @property
    def duration(self):
        end = self.ended_at or self.last_seen_at
        return end - self.started_at if end else None
