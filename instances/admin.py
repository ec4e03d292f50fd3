from django.contrib import admin
from django.utils.html import format_html

from .models import Activity, Instance, PortAllocation, Setting


class PortAllocationInline(admin.TabularInline):
    model = PortAllocation
    extra = 0
    can_delete = False
    readonly_fields = ["port_chrome", "port_terminal"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = [
        "name", "display_name", "status", "desired_state", "chrome_vnc", "terminal_vnc",
        "status_observed_at",
    ]
    list_filter = ["status", "desired_state"]
    search_fields = ["name", "display_name"]
    list_select_related = ["ports"]
    readonly_fields = ["status", "status_message", "status_observed_at", "created_at", "updated_at"]
    inlines = [PortAllocationInline]

    def get_readonly_fields(self, request, obj=None):
        # The name is baked into container, volume and directory names: fixed once created.
        fields = list(super().get_readonly_fields(request, obj))
        return fields + ["name"] if obj else fields

    @admin.display(description="Chrome VNC")
    def chrome_vnc(self, obj):
        ports = getattr(obj, "ports", None)
        if not ports:
            return "-"
        return format_html('<a href="{0}" target="_blank">{1}</a>', ports.chrome_vnc_url,
                           ports.port_chrome)

    @admin.display(description="Terminal VNC")
    def terminal_vnc(self, obj):
        ports = getattr(obj, "ports", None)
        if not ports:
            return "-"
        return format_html('<a href="{0}" target="_blank">{1}</a>', ports.terminal_vnc_url,
                           ports.port_terminal)


@admin.register(PortAllocation)
class PortAllocationAdmin(admin.ModelAdmin):
    list_display = ["instance", "port_chrome", "port_terminal"]
    list_select_related = ["instance"]
    search_fields = ["instance__name"]


@admin.register(Setting)
class SettingAdmin(admin.ModelAdmin):
    list_display = ["key", "shown_value", "updated_at"]
    search_fields = ["key"]

    @admin.display(description="Value")
    def shown_value(self, obj):
        # Global API keys are stored encrypted; never echo even the ciphertext.
        return "(encrypted)" if obj.key.startswith("api_key:") else obj.value


@admin.register(Activity)
class ActivityAdmin(admin.ModelAdmin):
    list_display = ["created_at", "instance_name", "action", "actor", "result", "message"]
    list_filter = ["result", "action"]
    search_fields = ["instance_name", "message"]
    readonly_fields = [f.name for f in Activity._meta.fields]

    def has_add_permission(self, request):
        return False
