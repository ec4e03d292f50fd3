"""The markup of one instance's status badge, desktop links, action buttons and status-list row.

Built here rather than by included templates: a page shows these for up to 50 rows, and the
template engine's include and inclusion-tag machinery was most of a page's time at that size
(docs/performance.md). For the same reason each value is escaped once, with `_e`, and the
pieces are joined as plain strings: format_html's per-argument escape (lazy-aware, so several
calls deep) was half of what remained. Every value from the database or settings goes through
`_e`; everything else here is a literal. A test feeds hostile names, messages and links through
each function.

static/instances/live.js updates this markup in place, through the data-live-* and data-vnc-*
attributes; the template tags in templatetags/claworc_controls.py and the admin's list column
call these functions.
"""

import re
from html import escape

from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince
from django.utils.timezone import localtime

from .controls import ACTIONS, actions_for
from .models import Instance


def _e(value) -> str:
    """Django's escape() without its lazy-string wrapper: the same output for a plain value."""
    return escape(str(value))


_SLUG = re.compile(r"[-a-zA-Z0-9_]+")
_PLACEHOLDER = "instance-name-here"
_url_parts: dict[tuple, tuple[str, str]] = {}


def _url(viewname: str, name: str | None = None) -> str:
    """reverse(viewname, args=[name]) (no args without a name), escaped. A row's URLs differ
    only by the name: each view is reversed once per URLconf and script prefix (reverse() was
    a fifth of a row's time)."""
    if name is not None and not _SLUG.fullmatch(name):
        return _e(reverse(viewname, args=[name]))  # what the URLconf says of it, as before
    key = (viewname, get_urlconf(), get_script_prefix())
    parts = _url_parts.get(key)
    if parts is None:
        if name is None:
            parts = (_e(reverse(viewname)), "")
        else:
            head, _, tail = reverse(viewname, args=[_PLACEHOLDER]).partition(_PLACEHOLDER)
            parts = (_e(head), _e(tail))
        _url_parts[key] = parts
    return f"{parts[0]}{name or ''}{parts[1]}"


# get_FOO_display() builds a dict of the choices at every call.
_STATUS_LABELS = {value: _e(label) for value, label in Instance.Status.choices}
_DESIRED_LABELS = {value: _e(label) for value, label in Instance.DesiredState.choices}


def _status_label(instance) -> str:
    return _STATUS_LABELS.get(instance.status) or _e(instance.status)


def _desired_label(instance) -> str:
    return _DESIRED_LABELS.get(instance.desired_state) or _e(instance.desired_state)


def _badge(instance, name: str) -> str:
    return (f'<span class="status claworc-badge status-{_e(instance.status)}" '
            f'data-live-name="{name}" data-live-field="status">'
            f'{_status_label(instance)}</span>')


def status_badge(instance) -> SafeString:
    return mark_safe(_badge(instance, _e(instance.name)))


def _vnc(instance, name: str, links: list[dict[str, str]], buttons: bool) -> str:
    if instance.status != "running":
        reason = "not running"
    elif not buttons:
        reason = "You do not have permission to use desktops."
    else:
        reason = ""
    css, prefix = ("vnc claworc-btn", "Open ") if buttons else ("vnc", "")
    anchors = "".join(
        f'<a class="{css}" href="{_e(link["url"])}" target="_blank" rel="noopener" '
        f'title="{_e(link["note"])}">{prefix}{_e(link["label"])}</a> ' for link in links)
    return (f'<span class="claworc-vnc" data-live-name="{name}" data-live-field="vnc"'
            f'{" data-vnc-buttons" if buttons else ""}>{anchors}'
            f'<span class="muted" data-vnc-off{" hidden" if links else ""}>{reason}</span></span>')


def vnc(instance, links: list[dict[str, str]], *, buttons: bool = False) -> SafeString:
    """The desktop links ("Open Chrome" buttons with `buttons`), and the reason when there are
    none; live.js replaces the links as the instance starts and stops."""
    return mark_safe(_vnc(instance, _e(instance.name), links, buttons))


# Per action: (value, label, ' title="…"'), escaped once.
_BUTTONS = [(_e(action), _e(label), f' title="{_e(title)}"')
            for action, (_, label, title) in ACTIONS.items()]


def controls(instance, *, allowed: bool, next_url: str, csrf_token: str,
             compact: bool = False) -> SafeString:
    """Start/Stop/Restart/Recreate as one form, each button hidden while it makes no sense
    (live.js shows and hides them); `compact` (list rows) leaves out the titles. Nothing for
    a user who may not control instances."""
    if not allowed:
        return mark_safe("")
    name = _e(instance.name)
    shown = actions_for(instance.status, instance.desired_state)
    buttons = "".join(
        f'<button type="submit" name="action" value="{action}" '
        f'class="claworc-btn claworc-btn-{action}" data-live-name="{name}" '
        f'data-live-action="{action}"{"" if compact else title}'
        f'{"" if action in shown else " hidden"}>{label}</button>'
        for action, label, title in _BUTTONS)
    token = (f'<input type="hidden" name="csrfmiddlewaretoken" value="{_e(csrf_token)}">'
             if csrf_token and csrf_token != "NOTPROVIDED" else "")
    action_url = _url("instances:action", instance.name)
    return mark_safe(
        f'<form method="post" action="{action_url}" class="claworc-controls">{token}'
        f'<input type="hidden" name="next" value="{_e(next_url)}">{buttons}</form>')


def list_row(instance, *, links: list[dict[str, str]], buttons: str, now) -> SafeString:
    """One row of the status list's table (templates/instances/_table.html); `buttons` is
    controls()' markup."""
    from .usage import usage_text

    name = _e(instance.name)
    ports = getattr(instance, "ports", None)
    schedule = instance.schedule
    auto_reason = instance.auto_reason
    message = instance.status_message
    created = localtime(instance.created_at)
    return mark_safe(
        f'<tr id="instance-{name}">'
        f'<td data-label="Name"><a href="{_url("instances:detail", instance.name)}">'
        f'<strong>{name}</strong></a><br><span class="muted">{_e(instance.display_name)}</span>'
        f'</td><td data-label="Status">{_badge(instance, name)}'
        f'<span class="message claworc-status-message" data-live-name="{name}" '
        f'data-live-field="message"{"" if message else " hidden"}>{_e(message)}</span></td>'
        f'<td data-label="Desired"><span data-live-name="{name}" data-live-field="desired">'
        f'{_desired_label(instance)}</span>'
        + (f'<br><span class="muted run-hours" title="Run hours">runs {_e(schedule)}</span>'
           if schedule else "")
        + (f'<br><span class="muted auto-reason">{_e(auto_reason)}</span>' if auto_reason else "")
        + '</td><td data-label="VNC">'
        + (_vnc(instance, name, links, False) if ports else '<span class="muted">—</span>')
        + '</td><td data-label="Ports">'
        + (f"{_e(ports.port_chrome)}/{_e(ports.port_terminal)}" if ports
           else '<span class="muted">none yet</span>')
        + f'</td><td data-label="Usage" data-live-name="{name}" data-live-field="usage">'
        f'{_e(usage_text(instance) or "—")}</td>'
        f'<td data-label="Age" title="{created.isoformat()}">'
        f'{_e(timesince(created, now))}</td>'
        f'<td data-label="Actions">{buttons}</td></tr>')


# The admin changelist's live columns (admin_live.py).

def admin_name(instance) -> SafeString:
    return mark_safe(f'<strong>{_e(instance.name)}</strong><br>'
                     f'<span class="quiet">{_e(instance.display_name)}</span>')


def admin_status(instance, observed: str) -> SafeString:
    """The badge and the whole message; `observed` (when it was last observed) on hover."""
    name, message = _e(instance.name), _e(instance.status_message)
    return mark_safe(
        f'<span class="status claworc-badge status-{_e(instance.status)}" '
        f'data-live-name="{name}" data-live-field="status" data-live-url="{_url("instances:live")}"'
        f' title="Last observed: {_e(observed)}">'
        f'{_status_label(instance)}</span>'
        f'<span class="claworc-status-message" data-live-name="{name}" data-live-field="message"'
        f' title="{message}"{"" if message else " hidden"}>{message}</span>')


def admin_desired(instance) -> SafeString:
    """The desired state, and why the schedule or idle stop left it so."""
    auto_reason = instance.auto_reason
    return mark_safe(
        f'<span data-live-name="{_e(instance.name)}" data-live-field="desired">'
        f'{_desired_label(instance)}</span>'
        + (f'<br><span class="quiet auto-reason">{_e(auto_reason)}</span>' if auto_reason else ""))


def admin_usage(instance) -> SafeString:
    from .usage import usage_text

    return mark_safe(f'<span data-live-name="{_e(instance.name)}" data-live-field="usage">'
                     f'{_e(usage_text(instance) or "—")}</span>')


# The admin changelist's rows (templatetags/claworc_admin_list.py): the markup of Django's
# items_for_result() for a list_display of admin methods, with what is the same for every row
# worked out once a page.

def admin_rows_supported(cl) -> bool:
    """Whether every column is an admin method (or the checkbox) admin_row() can build."""
    from django.core.exceptions import FieldDoesNotExist

    for name in cl.list_display:
        if not isinstance(name, str) or not callable(getattr(cl.model_admin, name, None)):
            return False
        try:
            cl.lookup_opts.get_field(name)
        except FieldDoesNotExist:
            continue
        return False  # a model field: Django formats those by type
    return True


def admin_cells(cl) -> dict:
    from django.contrib.admin.templatetags.admin_urls import add_preserved_filters

    admin_site = cl.model_admin.admin_site
    empty = cl.model_admin.get_empty_value_display()
    links = cl.list_display_links
    columns, first = [], True
    for name in cl.list_display:
        method = getattr(cl.model_admin, name)
        if links is None:
            link = False
        else:
            link = (first and not links) or name in links
        tag = "th" if link and first else "td"
        if link:
            first = False
        css = "action-checkbox" if name == "action_checkbox" else f"field-{name}"
        columns.append((method, tag, css, link, getattr(method, "empty_value_display", empty),
                        getattr(method, "boolean", False)))
    change = reverse(f"admin:{cl.opts.app_label}_{cl.opts.model_name}_change",
                     args=[_PLACEHOLDER], current_app=admin_site.name)
    change = add_preserved_filters(
        {"preserved_filters": cl.preserved_filters, "opts": cl.opts}, change)
    head, _, tail = change.partition(_PLACEHOLDER)
    return {"columns": columns, "url": (_e(head), _e(tail)), "popup": cl.is_popup,
            "pk": cl.lookup_opts.pk.attname, "to_field": str(cl.to_field) if cl.to_field else ""}


def admin_row(cells: dict, obj) -> SafeString:
    """One changelist row's cells, as items_for_result() writes them."""
    import datetime

    from django.contrib.admin.utils import display_for_value, quote

    out = []
    for method, tag, css, link, empty, boolean in cells["columns"]:
        value = method(obj)
        nowrap = ""
        if isinstance(value, str):
            shown = value if value.strip() else empty
        else:
            shown = display_for_value(value, empty, boolean)
            if isinstance(value, (datetime.date, datetime.time)):
                nowrap = " nowrap"
        shown = shown if hasattr(shown, "__html__") else _e(shown)
        if link:
            url = f"{cells['url'][0]}{_e(quote(getattr(obj, cells['pk'])))}{cells['url'][1]}"
            opener = ""
            if cells["popup"]:
                value = obj.serializable_value(cells["to_field"] or cells["pk"])
                opener = f' data-popup-opener="{_e(value)}"'
            shown = f'<a href="{url}"{opener}>{shown}</a>'
        out.append(f'<{tag} class="{css}{nowrap}">{shown}</{tag}>')
    return mark_safe("".join(out))
