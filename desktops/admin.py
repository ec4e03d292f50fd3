from django.contrib import admin

from .models import DesktopSession


@admin.register(DesktopSession)
class DesktopSessionAdmin(admin.ModelAdmin):
    """Who opened which desktop, from where, when and for how long: read-only."""

    list_display = ("instance_name", "desktop", "username", "client_address", "started_at",
                    "ended_at", "duration", "close_reason")
    list_filter = ("desktop", "ended_at")
    search_fields = ("instance_name", "username", "client_address")
    date_hierarchy = "started_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
