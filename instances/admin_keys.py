"""Admin for API keys: the global keys page, and the mixin that saves per-instance overrides.

The global keys are Setting rows, but one row per key in a changelist would show ciphertext and
hide the keys that are not set; so they get a single form page of their own at
`admin/instances/api-keys/`, listed under "Instances" beside the models, guarded by the
Setting permissions. Changes are recorded as admin LogEntries of the Setting rows (key names,
never values) and listed on the page.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from . import key_services, keys
from .forms import API_KEYS_FIELDSET, RESTART_HELP, GlobalApiKeysForm, sensitive_fields
from .models import Setting

URL_NAME = "instances_api_keys"
TITLE = "Global API keys"


def _restart_message(names: list[str], count: int) -> str:
    verb = "restarts" if count == 1 else "restart"
    return (f"{', '.join(names)} changed: {count} instance{'s' if count != 1 else ''} using "
            f"{'it' if len(names) == 1 else 'them'} {verb} briefly to pick up the new "
            "environment; volumes are kept.")


class InstanceApiKeysAdminMixin:
    """For InstanceAdmin: groups the API key inputs in their own fieldset (with the restart
    notice) and applies the overrides once the instance is saved."""

    def get_fieldsets(self, request, obj=None):
        key_fields = set(API_KEYS_FIELDSET[1]["fields"])
        key_fields |= {name for line in API_KEYS_FIELDSET[1]["fields"] for name in line}
        fieldsets = []
        for title, options in super().get_fieldsets(request, obj):
            fields = []
            for line in options.get("fields", ()):
                if isinstance(line, (list, tuple)):
                    line = tuple(name for name in line if name not in key_fields)
                    if line:
                        fields.append(line)
                elif line not in key_fields:
                    fields.append(line)
            if fields:
                fieldsets.append((title, {**options, "fields": fields}))
        return [*fieldsets, API_KEYS_FIELDSET]

    # Error reports (mail_admins, the debug page) must not show what was typed into a key input.
    @method_decorator(sensitive_post_parameters(*sensitive_fields()))
    def changeform_view(self, request, *args, **kwargs):
        return super().changeform_view(request, *args, **kwargs)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if not hasattr(form, "save_api_keys"):
            return
        # A new instance is reconciled by its creation, which already sees these keys. The
        # admin says what was changed (one message with the edit, see InstanceAdmin).
        form.changed_key_names = form.save_api_keys(actor=request.user.get_username(),
                                                    reconcile=change)


def _log(request, names_by_flag: dict[int, list[str]], rows: dict[str, int]) -> None:
    content_type = ContentType.objects.get_for_model(Setting)
    words = {ADDITION: "Set", CHANGE: "Changed", DELETION: "Removed"}
    for flag, names in names_by_flag.items():
        for name in names:
            LogEntry.objects.create(
                user_id=request.user.pk, content_type=content_type,
                object_id=str(rows[name]), object_repr=keys.GLOBAL_PREFIX + name,
                action_flag=flag,
                change_message=f"{words[flag]} the global {name} (value not recorded).",
            )


@sensitive_post_parameters(*sensitive_fields())
@never_cache
def global_api_keys_view(request):
    if not request.user.has_perm("instances.view_setting"):
        raise PermissionDenied
    can_change = request.user.has_perm("instances.change_setting")
    if request.method == "POST":
        if not can_change:
            raise PermissionDenied
        form = GlobalApiKeysForm(request.POST)
        if form.is_valid():
            before = dict(Setting.objects.filter(key__startswith=keys.GLOBAL_PREFIX)
                          .values_list("key", "pk"))
            changed = form.save(actor=request.user.get_username())
            after = dict(Setting.objects.filter(key__startswith=keys.GLOBAL_PREFIX)
                         .values_list("key", "pk"))
            flags: dict[int, list[str]] = {ADDITION: [], CHANGE: [], DELETION: []}
            rows = {}
            for name in changed:
                key = keys.GLOBAL_PREFIX + name
                flag = (DELETION if key not in after else CHANGE if key in before else ADDITION)
                flags[flag].append(name)
                rows[name] = after.get(key) or before[key]
            _log(request, flags, rows)
            if changed:
                count = len(key_services.instances_using_global(changed))
                messages.warning(request, _restart_message(changed, count))
            else:
                messages.info(request, "No key changed.")
            return redirect(reverse(f"admin:{URL_NAME}"))
    else:
        form = GlobalApiKeysForm()
    if not can_change:
        for field in form.fields.values():
            field.disabled = True
    usage = _usage()
    rows = [
        {"name": name, "label": keys.KEYS[name], "field": form[f"key_{name.lower()}"],
         "clear": form[f"clear_{name.lower()}"], "usage": usage[name]}
        for name in keys.KEY_NAMES
    ]
    context = {
        **admin.site.each_context(request),
        "title": TITLE,
        "form": form,
        "rows": rows,
        "can_change": can_change,
        "restart_help": RESTART_HELP,
        "history": LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(Setting),
            object_repr__startswith=keys.GLOBAL_PREFIX,
        ).select_related("user")[:20],
        "opts": Setting._meta,
        "app_label": "instances",
    }
    return TemplateResponse(request, "admin/instances/global_api_keys.html", context)


def _usage() -> dict[str, str]:
    """Per key: how many instances take it from the globals and how many override it."""
    from .models import Instance

    total = 0
    overridden = dict.fromkeys(keys.KEY_NAMES, 0)
    unreadable = 0
    for instance in Instance.objects.only("pk", "name", "encrypted_api_keys"):
        total += 1
        try:
            for name in keys.get_overrides(instance):
                overridden[name] += 1
        except keys.UnreadableKey:
            unreadable += 1
    shown = {}
    for name in keys.KEY_NAMES:
        text = f"{total - overridden[name]} of {total} instances use it"
        if overridden[name]:
            text += f"; {overridden[name]} override{'s' if overridden[name] == 1 else ''} it"
        if unreadable:
            text += f"; {unreadable} have unreadable overrides"
        shown[name] = text + "."
    return shown


def install(site: admin.AdminSite) -> None:
    """Add the page's URL and its entry under "Instances" to `site` (idempotent).

    AdminSite has no hook for a custom page, and a proxy model would need a migration for a
    page that has no table of its own; wrapping the two methods keeps it to this module.
    """
    if getattr(site, "_claworc_api_keys", False):
        return
    site._claworc_api_keys = True
    get_urls, get_app_list = site.get_urls, site.get_app_list

    def urls():
        return [
            path("instances/api-keys/", site.admin_view(global_api_keys_view), name=URL_NAME),
            *get_urls(),
        ]

    def app_list(request, app_label=None):
        apps = get_app_list(request, app_label)
        if not request.user.has_perm("instances.view_setting"):
            return apps
        for app in apps:
            if app["app_label"] == "instances":
                app["models"].append({
                    "model": None, "name": TITLE, "object_name": "GlobalApiKeys",
                    "perms": {"add": False, "change": request.user.has_perm(
                        "instances.change_setting"), "delete": False, "view": True},
                    "admin_url": reverse(f"admin:{URL_NAME}", current_app=site.name),
                    "add_url": None,
                    "view_only": not request.user.has_perm("instances.change_setting"),
                })
                app["models"].sort(key=lambda m: m["name"])
        return apps

    site.get_urls = urls
    site.get_app_list = app_list


install(admin.site)
