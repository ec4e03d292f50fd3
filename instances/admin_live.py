"""Live columns and one-click buttons for the instance admin (InstanceAdmin mixes this in).

The changelist fits 1,400 px: the name with the display name under it, the status with its
whole message (when it was last observed on hover), desired state, usage (sortable by CPU) and
the desktop links in one cell (only while the instance runs). Status, message, usage and links
update without a reload (static/instances/live.js polls instances_live). The change page gets
Start, Stop, Restart, Recreate and Open Chrome/Terminal buttons
(templates/admin/instances/instance/change_form.html).
"""

from django.contrib import admin
from django.utils.formats import date_format
from django.utils.timezone import localtime

from . import markup
from .controls import vnc_links

LIVE_COLUMNS = ["instance", "live_status", "desired", "usage_column", "vnc"]


class InstanceLiveAdminMixin:
    list_display_links = ["instance"]

    class Media:
        css = {"all": ["instances/live.css"]}
        js = ["instances/live.js"]

    @admin.display(description="Instance", ordering="name")
    def instance(self, obj):
        return markup.admin_name(obj)

    @admin.display(description="Status", ordering="status")
    def live_status(self, obj):
        observed = obj.last_observed
        return markup.admin_status(
            obj, date_format(localtime(observed), "DATETIME_FORMAT") if observed else "never")

    @admin.display(description="Desired state", ordering="desired_state")
    def desired(self, obj):
        return markup.admin_desired(obj)

    @admin.display(description="CPU · memory", ordering="usage__cpu_cores")
    def usage_column(self, obj):
        return markup.admin_usage(obj)

    @admin.display(description="VNC")
    def vnc(self, obj):
        return markup.vnc(obj, vnc_links(obj))

