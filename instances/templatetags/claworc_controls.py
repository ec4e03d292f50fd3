"""`{% instance_status instance %}`, `{% instance_controls instance next %}`,
`{% instance_vnc instance %}`, `{% instance_row instance %}`: one instance's status badge, buttons,
desktop links and status-list row, marked up for live updates (instances/markup.py,
static/instances/live.js)."""

from django import template

from instances import markup
from instances.controls import can_control, vnc_links
from instances.usage import usage_text as _usage_text

register = template.Library()


@register.simple_tag
def instance_status(instance):
    return markup.status_badge(instance)


@register.simple_tag(takes_context=True)
def instance_row(context, instance):
    """One row of the status list, with its buttons and desktop links."""
    request = context.get("request")
    return markup.list_row(
        instance, links=vnc_links(instance, getattr(request, "user", None)),
        buttons=instance_controls(context, instance, compact=True), now=context.get("now"))


@register.simple_tag(takes_context=True)
def instance_controls(context, instance, next_url="", compact=False):
    """Start/Stop/Restart/Recreate as one form; `compact` (list rows) leaves out the titles."""
    request = context.get("request")
    user = getattr(request, "user", None)
    return markup.controls(
        instance, allowed=can_control(user) if user is not None else False,
        next_url=next_url or (request.get_full_path() if request else ""),
        csrf_token=str(context.get("csrf_token") or ""), compact=compact)


@register.simple_tag(takes_context=True)
def instance_vnc(context, instance, buttons=False):
    """The desktop links while the instance runs ("Open Chrome" buttons with `buttons`)."""
    request = context.get("request")
    return markup.vnc(instance, vnc_links(instance, getattr(request, "user", None)),
                      buttons=buttons)


@register.filter
def usage_text(instance):
    return _usage_text(instance) or "—"
