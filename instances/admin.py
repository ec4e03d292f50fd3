"""The admin: declarative pages; every action is a line or two that calls a service.

No action, save or delete here talks to Docker or Kubernetes: services change the desired state
and enqueue tasks that run in the Celery worker.
"""

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce, NullIf
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext

from instances import services
from instances.services import rollouts
from orchestrators import registry

from . import admin_keys, housekeeping, keys, markup  # noqa: F401  admin_keys: the global keys page
from .admin_keys import InstanceApiKeysAdminMixin
from .admin_live import LIVE_COLUMNS, InstanceLiveAdminMixin
from .controls import vnc_links
from .forms import API_KEYS_FIELDSET, InstanceAdminForm
from .models import (
    Activity,
    ImagePull,
    Instance,
    OrphanWorkload,
    PortAllocation,
    Rollout,
    RolloutStep,
    Setting,
)
from .services.images import REGISTRY_AUTH_PREFIX

RECENT_ACTIVITY = 20


class PortAllocationInline(admin.TabularInline):
    model = PortAllocation
    extra = 0
    can_delete = False
    readonly_fields = ["port_chrome", "port_terminal"]

    def has_add_permission(self, request, obj=None):
        return False


def _vnc_link(url: str, port: int):
    return format_html('<a href="{0}" target="_blank" rel="noopener">{1}</a>', url, port)


def confirm_action(model_admin, request, template: str, *, title: str, selected: list,
                   action: str, **context) -> TemplateResponse:
    """The page an irreversible action shows first; it posts `selected` back with confirm=yes."""
    return TemplateResponse(request, template, {
        **model_admin.admin_site.each_context(request), "opts": model_admin.model._meta,
        "title": title, "selected": selected, "action": action,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME, **context,
    })


class NulSafeChangelistMixin:
    """Odd query strings give a normal page: PostgreSQL refuses a NUL character in any string it
    is sent, so a filter or search holding one is dropped (and said so) instead of failing."""

    def get_changelist_instance(self, request):
        bad = sorted({key for key, values in request.GET.lists()
                      if "\x00" in key or any("\x00" in v for v in values)})
        if bad:
            query = request.GET.copy()
            for key in bad:
                del query[key]
            request.GET = query
            self.message_user(request, "Ignored a filter or search holding a NUL character.",
                              messages.WARNING)
        return super().get_changelist_instance(request)


@admin.register(Instance)
class InstanceAdmin(NulSafeChangelistMixin, InstanceLiveAdminMixin, InstanceApiKeysAdminMixin,
                    admin.ModelAdmin):
    form = InstanceAdminForm  # write-only API key overrides, shown masked
    list_display = [*LIVE_COLUMNS, "image_column"]  # live columns: admin_live.py
    list_filter = ["status", "desired_state"]
    search_fields = ["name", "display_name"]
    list_select_related = ["ports", "usage"]
    # As many rows as the status list: rendering a row is most of the page's cost, and 100 made
    # the page at 1,000 instances several times as slow as at 10.
    list_per_page = 50

    def action_checkbox(self, obj):
        # Django's renders a form widget through the template engine for every row, a fifth of
        # the page's time at 50 rows; the same markup (a test compares them), built directly.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME, obj.pk,
            format_html(gettext("Select this object for an action - {}"), str(obj)))
    readonly_fields = [
        "status", "status_message", "last_observed", "vnc_links", "recent_activity",
        "created_at", "updated_at", "run_hours_state",
    ]
    inlines = [PortAllocationInline]
    fieldsets = [
        (None, {"fields": ["display_name", "name", "desired_state", "keep_volumes",
                           "expected_version"]}),
        ("Status", {"fields": ["status", "status_message", "last_observed", "vnc_links"]}),
        ("Workload", {"fields": ["image", ("cpu_request", "cpu_limit"),
                                 ("memory_request", "memory_limit"), "clawdbot_config"]}),
        ("Volume sizes (Kubernetes)", {"classes": ["collapse"], "fields": [
            ("storage_clawdbot", "storage_homebrew"), ("storage_clawd", "storage_chrome")]}),
        ("Run hours and idle stop", {
            "fields": ["schedule_days", ("schedule_start", "schedule_end", "schedule_timezone"),
                       "idle_stop", "run_hours_state"],
            "description": "At the window's start the schedule starts the instance, at its end "
            "it stops it; a person's Start or Stop in between stands until the next edge. A "
            "new or changed schedule acts from its next edge. docs/schedules.md",
        }),
        API_KEYS_FIELDSET,
        ("Activity", {"fields": ["recent_activity", "created_at", "updated_at"]}),
    ]
    actions = [
        "start_instances", "stop_instances", "restart_instances", "recreate_instances",
        "refresh_instances", "update_image", "update_image_fleet", "delete_keeping_volumes",
        "delete_with_volumes",
    ]

    # --- pages ----------------------------------------------------------------------------------

    delete_confirmation_template = "admin/instances/instance/delete_confirmation.html"

    def get_readonly_fields(self, request, obj=None):
        # The name is baked into container, volume and directory names: fixed once created. The
        # desired state changes only through Start and Stop, which check the transition.
        fields = list(super().get_readonly_fields(request, obj))
        return fields + ["name", "desired_state"] if obj else fields

    def get_fieldsets(self, request, obj=None):
        if obj is None:  # nothing observed or done yet; no version to check
            return [
                (title, {**opts, "fields": [f for f in opts["fields"]
                                            if f not in ("expected_version", "run_hours_state")]})
                for title, opts in self.fieldsets if title not in ("Status", "Activity")
            ]
        return self.fieldsets

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # The task is sent once the admin's transaction commits, after save_model has returned:
        # only here can we tell the user that no broker answered.
        with services.collecting_unsent() as unsent:
            response = super().changeform_view(request, object_id, form_url, extra_context)
        if unsent:
            self.message_user(request, f"Saved {', '.join(unsent)}. {services.PENDING_NOTE}",
                              messages.WARNING)
        return response

    def delete_view(self, request, object_id, extra_context=None):
        with services.collecting_unsent() as unsent:
            response = super().delete_view(request, object_id, extra_context)
        if unsent:
            self.message_user(request, f"Saved deletion of {', '.join(unsent)}. "
                              f"{services.PENDING_NOTE}", messages.WARNING)
        return response

    def response_delete(self, request, obj_display, obj_id):
        # Deleting is two steps: say what happens now, not that the row is already gone.
        self.message_user(
            request, f"{obj_display} is being deleted: its workload is being removed; the row "
            "stays, with status deleting, until that is done.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:instances_instance_changelist",
                                            current_app=self.admin_site.name))

    def get_actions(self, request):
        # Replaced by the two delete actions below, which say what happens to the volumes.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request, obj, form, change):
        # A new row is provisioned by the post_save signal, attributed to this user; an edit of
        # what the workload runs with is converged the same way (see save_related's message).
        with services.acting_as(request.user.get_username()):
            super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if not change:
            return
        # One intent, one message: an edit and a key change saved together converge once.
        keys_changed = getattr(form, "changed_key_names", [])
        queued = getattr(form.instance, "last_converge", None)
        if keys_changed:
            self.message_user(
                request,
                f"API key override {', '.join(keys_changed)} changed: {form.instance.name} "
                "restarts briefly to pick up the new environment; its volumes are kept.",
                messages.WARNING)
        elif queued and queued.queued:
            self.message_user(request, f"{form.instance.name}: converging the workload to the "
                              "new settings (queued).", messages.INFO)

    def delete_model(self, request, obj):
        with services.acting_as(request.user.get_username()):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with services.acting_as(request.user.get_username()):
            super().delete_queryset(request, queryset)

    def get_queryset(self, request):
        # The digest the host last pulled for each instance's tag, in the same query: a
        # different one than the instance runs means an update is available.
        image = Coalesce(NullIf("image", Value("")), Value(settings.CLAWORC_AGENT_IMAGE))
        host_digest = ImagePull.objects.filter(image=OuterRef("effective_image_ref"),
                                               state=ImagePull.State.DONE).values("digest")[:1]
        return super().get_queryset(request).with_sweep().annotate(
            effective_image_ref=image).annotate(host_digest=Subquery(host_digest))

    # --- columns and read-only fields -----------------------------------------------------------

    @admin.display(description="Image")
    def image_column(self, obj):
        host = getattr(obj, "host_digest", None)
        if host and obj.running_digest and host != obj.running_digest:
            return format_html('{0}<br><strong class="update-available" title="runs {1}, the '
                               'host has {2}">update available</strong>', obj.effective_image,
                               obj.running_digest[:19], host[:19])
        return obj.effective_image

    @admin.display(description="VNC")
    def vnc_links(self, obj):
        ports = getattr(obj, "ports", None) if obj.pk else None
        if not ports:
            return "No ports yet: they are allocated when the instance is created."
        from desktops.selectors import access_description

        # Shown only while it runs (they would not answer otherwise); live.js shows them later.
        links = markup.vnc(obj, vnc_links(obj))
        return format_html('{0}<br><span class="help">{1}</span>', links, access_description())

    @admin.display(description="Schedule now")
    def run_hours_state(self, obj):
        from .run_hours import schedule_summary

        text = schedule_summary(obj) or "No schedule."
        if obj.pk and obj.auto_reason:
            return format_html("{}<br><strong>{}</strong>", text, obj.auto_reason)
        return text

    @admin.display(description="Recent activity")
    def recent_activity(self, obj):
        if not obj.pk:
            return "-"
        rows = Activity.objects.filter(instance=obj)[:RECENT_ACTIVITY]
        body = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((f"{a.created_at:%Y-%m-%d %H:%M:%S}", a.action, a.actor, a.get_result_display(),
              a.message) for a in rows),
        )
        if not body:
            return "Nothing recorded yet."
        return format_html(
            '<table class="claworc-activity"><thead><tr><th>When (UTC)</th><th>What</th>'
            "<th>Who</th><th>Result</th><th>Message</th></tr></thead><tbody>{}</tbody></table>",
            body,
        )

    # --- actions: each changes desired state through a service and says what it queued ----------

    def _report(self, request, outcome: services.Queued) -> None:
        level = messages.WARNING if outcome.skipped else messages.SUCCESS
        self.message_user(request, outcome.summary(), level)

    @staticmethod
    def _ids(queryset) -> list[int]:
        return list(queryset.values_list("pk", flat=True))

    @admin.action(description="Start selected instances", permissions=["change"])
    def start_instances(self, request, queryset):
        self._report(request, services.instance_start(
            instance_ids=self._ids(queryset), actor=request.user.get_username()))

    @admin.action(description="Stop selected instances", permissions=["change"])
    def stop_instances(self, request, queryset):
        self._report(request, services.instance_stop(
            instance_ids=self._ids(queryset), actor=request.user.get_username()))

    @admin.action(description="Restart selected instances", permissions=["change"])
    def restart_instances(self, request, queryset):
        self._report(request, services.instance_restart(
            instance_ids=self._ids(queryset), actor=request.user.get_username()))

    @admin.action(description="Recreate selected instances (volumes kept)",
                  permissions=["change"])
    def recreate_instances(self, request, queryset):
        self._report(request, services.instance_recreate(
            instance_ids=self._ids(queryset), actor=request.user.get_username()))

    @admin.action(description="Refresh status of selected instances", permissions=["view"])
    def refresh_instances(self, request, queryset):
        self._report(request, services.instance_refresh(
            instance_ids=self._ids(queryset), actor=request.user.get_username()))

    @admin.action(description="Update image of selected instances (pull, then recreate in "
                  "batches)", permissions=["change"])
    def update_image(self, request, queryset):
        return self._update_image(request, self._ids(queryset), action="update_image")

    @admin.action(description="Update image of ALL instances on the selected instances' images",
                  permissions=["change"])
    def update_image_fleet(self, request, queryset):
        ids = rollouts.instances_on_images(instance_ids=self._ids(queryset))
        return self._update_image(request, ids, action="update_image_fleet")

    def _update_image(self, request, ids: list[int], *, action: str):
        instances = list(Instance.objects.filter(pk__in=ids).order_by("name"))
        default = settings.CLAWORC_ROLLOUT_BATCH_SIZE
        if request.POST.get("confirm") != "yes":
            by_image: dict[str, list] = {}
            for instance in instances:
                by_image.setdefault(instance.effective_image, []).append(instance)
            return confirm_action(
                self, request, "admin/instances/instance/update_image_confirmation.html",
                title="Update image?", selected=instances, action=action,
                by_image=sorted(by_image.items()), batch_size=default,
            )
        try:
            batch_size = int(request.POST.get("batch_size") or default)
            started = rollouts.rollout_start(instance_ids=ids, batch_size=batch_size,
                                             actor=request.user.get_username())
        except ValueError:
            self.message_user(request, "The batch size is a whole number, at least 1.",
                              messages.ERROR)
            return None
        for rollout in started:
            url = reverse("admin:instances_rollout_change", args=[rollout.pk])
            self.message_user(request, format_html(
                'Updating {0}: <a href="{1}">rollout #{2}</a>, {3} instance(s) in batches of {4}.',
                rollout.image, url, rollout.pk, rollout.steps.count(), batch_size),
                messages.SUCCESS)
        if len(started) == 1:
            return HttpResponseRedirect(
                reverse("admin:instances_rollout_change", args=[started[0].pk]))
        return None

    @admin.action(description="Delete selected instances, keeping their volumes",
                  permissions=["delete"])
    def delete_keeping_volumes(self, request, queryset):
        return self._delete(request, queryset, action="delete_keeping_volumes", keep_volumes=True)

    @admin.action(description="Delete selected instances with their volumes (data lost)",
                  permissions=["delete"])
    def delete_with_volumes(self, request, queryset):
        return self._delete(request, queryset, action="delete_with_volumes", keep_volumes=False)

    def _delete(self, request, queryset, *, action: str, keep_volumes: bool):
        # Deleting cannot be undone (and may destroy data): ask first, as Django's own does.
        if request.POST.get("confirm") != "yes":
            return confirm_action(
                self, request, "admin/instances/instance/delete_action_confirmation.html",
                title="Delete instances?", selected=list(queryset), action=action,
                keep_volumes=keep_volumes,
            )
        self._report(request, services.instance_delete(
            instance_ids=self._ids(queryset), keep_volumes=keep_volumes,
            actor=request.user.get_username()))
        return None


class ReadOnlyAdmin(NulSafeChangelistMixin, admin.ModelAdmin):
    """Records written by the system: viewable, never edited by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PortAllocation)
class PortAllocationAdmin(ReadOnlyAdmin):
    """Port pairs are allocated and freed with their instance only: an edited pair would leave
    VNC links pointing nowhere and a running container on the old ports."""

    list_display = ["instance", "port_chrome", "port_terminal", "chrome_vnc", "terminal_vnc"]
    list_select_related = ["instance"]
    search_fields = ["instance__name"]

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Chrome VNC")
    def chrome_vnc(self, obj):
        return _vnc_link(obj.chrome_vnc_url, obj.port_chrome)

    @admin.display(description="Terminal VNC")
    def terminal_vnc(self, obj):
        return _vnc_link(obj.terminal_vnc_url, obj.port_terminal)


class SettingForm(forms.ModelForm):
    class Meta:
        model = Setting
        fields = ["key", "value"]

    def clean_key(self):
        key = self.cleaned_data["key"].strip()
        if key.startswith(keys.GLOBAL_PREFIX):
            # Stored here in plain text, such a row would fail every instance using the key
            # ("cannot be decrypted"): keys are entered on their own, encrypting page.
            raise forms.ValidationError(
                "API keys are entered on the Global API keys page, which stores them encrypted; "
                "they cannot be added here.")
        if key.startswith(REGISTRY_AUTH_PREFIX):
            raise forms.ValidationError(
                "Registry credentials are stored encrypted by `manage.py "
                "set_registry_credentials`; they cannot be added here.")
        return key

    def clean(self):
        cleaned = super().clean()
        key, value = cleaned.get("key"), cleaned.get("value", "")
        if key == registry.SETTING_KEY and value.strip().lower() not in (
                *registry.BACKENDS, registry.AUTO, registry.NONE):
            self.add_error("value", f"{registry.SETTING_KEY} is one of: "
                           f"{', '.join((*registry.BACKENDS, registry.AUTO))}.")
        return cleaned


@admin.register(Setting)
class SettingAdmin(NulSafeChangelistMixin, admin.ModelAdmin):
    form = SettingForm
    list_display = ["key", "value", "updated_at"]
    search_fields = ["key"]

    def get_queryset(self, request):
        # Global API keys have their own page (admin_keys.py), registry credentials their own
        # command (set_registry_credentials); no ciphertext in a textarea.
        return super().get_queryset(request).exclude(key__startswith=keys.GLOBAL_PREFIX).exclude(
            key__startswith=REGISTRY_AUTH_PREFIX)


class RetainedRecordsMixin:
    """Says on the list how long its records are kept (CLAWORC_RETENTION_DAYS)."""

    def changelist_view(self, request, extra_context=None):
        days = settings.CLAWORC_RETENTION_DAYS
        extra_context = {"subtitle": f"Records older than {days} days are deleted daily "
                         "(CLAWORC_RETENTION_DAYS).", **(extra_context or {})}
        return super().changelist_view(request, extra_context)


@admin.register(Activity)
class ActivityAdmin(RetainedRecordsMixin, ReadOnlyAdmin):
    list_display = ["created_at", "instance_name", "action", "actor", "result", "message"]
    list_filter = ["result", "action"]
    search_fields = ["instance_name", "message"]


@admin.register(OrphanWorkload)
class OrphanWorkloadAdmin(RetainedRecordsMixin, ReadOnlyAdmin):
    """Managed workloads or volumes of this site with no instance, found by reconcile_all.

    Deleting the row alone would bring it back at the next check: the only removal is of the
    workload itself (container, config and volumes), asked for and confirmed.
    """

    list_display = ["name", "backend", "status", "message", "first_seen", "last_seen"]
    list_filter = ["backend"]
    search_fields = ["name"]
    actions = ["remove_workloads"]

    def has_delete_permission(self, request, obj=None):
        return False

    def has_remove_permission(self, request):
        return request.user.has_perm("instances.delete_orphanworkload")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Remove selected orphans: container, config and volumes (data "
                  "lost)", permissions=["remove"])
    def remove_workloads(self, request, queryset):
        if request.POST.get("confirm") != "yes":
            return confirm_action(
                self, request, "admin/instances/orphanworkload/remove_confirmation.html",
                title="Remove orphaned workloads?", selected=list(queryset),
                action="remove_workloads",
            )
        outcome = housekeeping.orphans_remove(
            orphan_ids=list(queryset.values_list("pk", flat=True)),
            actor=request.user.get_username())
        level = messages.WARNING if outcome.skipped else messages.SUCCESS
        self.message_user(request, outcome.summary(), level)
        return None


@admin.register(ImagePull)
class ImagePullAdmin(ReadOnlyAdmin):
    """The latest pull of each image onto the host, with its progress (written as it goes)."""

    list_display = ["image", "state", "progress", "digest", "message", "requested_at",
                    "finished_at"]
    list_filter = ["state"]
    search_fields = ["image", "digest"]

    @admin.display(description="Progress")
    def progress(self, obj):
        return obj.progress_text()


class RolloutStepInline(admin.TabularInline):
    model = RolloutStep
    extra = 0
    can_delete = False
    fields = ["batch_number", "instance_name", "state", "message", "updated_at"]
    readonly_fields = fields

    @admin.display(description="Batch")
    def batch_number(self, obj):
        return obj.batch + 1

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyAdmin):
    """Fleet image updates; one page shows the whole rollout as it goes (it refreshes)."""

    list_display = ["id", "image", "state", "progress", "message", "actor", "created_at"]
    list_filter = ["state"]
    fields = ["image", "digest", "state", "progress", "pull", "message", "batch_size", "actor",
              "created_at", "finished_at"]
    readonly_fields = fields
    inlines = [RolloutStepInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            n_steps=Count("steps"),
            n_done=Count("steps", filter=Q(steps__state__in=["done", "current"])))

    @admin.display(description="Updated")
    def progress(self, obj):
        return f"{obj.n_done} of {obj.n_steps} instance(s)"

    @admin.display(description="Pull")
    def pull(self, obj):
        found = ImagePull.objects.filter(image=obj.image).first()
        return f"{found.get_state_display()}: {found.progress_text()}" if found else "-"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        response = super().change_view(request, object_id, form_url, extra_context)
        # A running rollout's page follows it without a click (the status pages do the same).
        if hasattr(response, "headers"):
            response.headers["Refresh"] = "5"
        return response
