"""Live columns and one-click buttons for the instance admin (InstanceAdmin mixes this in).

The changelist fits 1,400 px: the name with the display name under it, the status with its
whole message (when it was last observed on hover), desired state, usage (sortable by CPU) and
the desktop links in one cell (only while the instance runs). Status, message, usage and links
update without a reload (static/instances/live.js polls instances_live). The change page gets
Start, Stop, Restart, Recreate and Open Chrome/Terminal buttons
(templates/admin/instances/instance/change_form.html).
"""

from django.contrib import admin
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import localtime

from .controls import vnc_links
from .usage import usage_text

LIVE_COLUMNS = ["instance", "live_status", "desired", "usage_column", "vnc"]


class InstanceLiveAdminMixin:
    list_display_links = ["instance"]

    class Media:
        css = {"all": ["instances/live.css"]}
        js = ["instances/live.js"]

    @admin.display(description="Instance", ordering="name")
    def instance(self, obj):
        return format_html('<strong>{}</strong><br><span class="quiet">{}</span>', obj.name,
                           obj.display_name)

    @admin.display(description="Status", ordering="status")
    def live_status(self, obj):
        observed = obj.last_observed
        return format_html(
            '<span class="status claworc-badge status-{0}" data-live-name="{1}" '
            'data-live-field="status" data-live-url="{2}" title="Last observed: {6}">{3}</span>'
            '<span class="claworc-status-message" data-live-name="{1}" data-live-field="message"'
            ' title="{4}"{5}>{4}</span>',
            obj.status, obj.name, reverse("instances:live"), obj.get_status_display(),
            obj.status_message, " hidden" if not obj.status_message else "",
            date_format(localtime(observed), "DATETIME_FORMAT") if observed else "never",
        )

    @admin.display(description="Desired state", ordering="desired_state")
    def desired(self, obj):
        shown = format_html('<span data-live-name="{}" data-live-field="desired">{}</span>',
                            obj.name, obj.get_desired_state_display())
        if obj.auto_reason:  # stopped (or refused a start) by the schedule or idle stop
            return format_html('{}<br><span class="quiet auto-reason">{}</span>', shown,
                               obj.auto_reason)
        return shown

    @admin.display(description="CPU · memory", ordering="usage__cpu_cores")
    def usage_column(self, obj):
        return format_html('<span data-live-name="{}" data-live-field="usage">{}</span>',
                           obj.name, usage_text(obj) or "—")

    @admin.display(description="VNC")
    def vnc(self, obj):
        return render_to_string("instances/_vnc.html", {
            "instance": obj, "links": vnc_links(obj)})

