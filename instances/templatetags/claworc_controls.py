"""`{% instance_controls instance next %}`, `{% instance_vnc instance %}`: the buttons and VNC
links of one instance, marked up for live updates (static/instances/live.js)."""

from django import template

from instances.controls import ACTIONS, actions_for, can_control, vnc_links
from instances.usage import usage_text as _usage_text

register = template.Library()


@register.inclusion_tag("instances/_controls.html", takes_context=True)
def instance_controls(context, instance, next_url="", compact=False):
    """Start/Stop/Restart/Recreate as one form; `compact` (list rows) leaves out the titles."""
    request = context.get("request")
    user = getattr(request, "user", None)
    allowed = can_control(user) if user is not None else False
    shown = actions_for(instance.status, instance.desired_state) if allowed else []
    return {
        "instance": instance,
        "allowed": allowed,
        "buttons": [(action, label, "" if compact else title, action in shown)
                    for action, (_, label, title) in ACTIONS.items()],
        "next": next_url or (request.get_full_path() if request else ""),
        "csrf_token": context.get("csrf_token"),
    }


@register.inclusion_tag("instances/_vnc.html", takes_context=True)
def instance_vnc(context, instance, buttons=False):
    """The desktop links while the instance runs ("Open Chrome" buttons with `buttons`)."""
    request = context.get("request")
    return {"instance": instance, "buttons": buttons,
            "links": vnc_links(instance, getattr(request, "user", None))}


@register.filter
def usage_text(instance):
    return _usage_text(instance) or "—"
