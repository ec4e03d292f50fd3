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


def _page(context) -> tuple:
    """(user, may control, this page's URL, CSRF token): the same for every row of a page, so
    worked out once per template render (render_context lives as long as that render)."""
    page = context.render_context.get(_PAGE)
    if page is None:
        request = context.get("request")
        user = getattr(request, "user", None)
        page = context.render_context[_PAGE] = (
            user, can_control(user) if user is not None else False,
            request.get_full_path() if request else "", str(context.get("csrf_token") or ""))
    return page


_PAGE = object()


@register.simple_tag(takes_context=True)
def instance_row(context, instance):
    """One row of the status list, with its buttons and desktop links."""
    user, allowed, next_url, token = _page(context)
    return markup.list_row(
        instance, links=vnc_links(instance, user),
        buttons=markup.controls(instance, allowed=allowed, next_url=next_url, csrf_token=token,
                                compact=True),
        now=context.get("now"))


@register.simple_tag(takes_context=True)
def instance_controls(context, instance, next_url="", compact=False):
    """Start/Stop/Restart/Recreate as one form; `compact` (list rows) leaves out the titles."""
    _, allowed, here, token = _page(context)
    return markup.controls(instance, allowed=allowed, next_url=next_url or here,
                           csrf_token=token, compact=compact)


@register.simple_tag(takes_context=True)
def instance_vnc(context, instance, buttons=False):
    """The desktop links while the instance runs ("Open Chrome" buttons with `buttons`)."""
    request = context.get("request")
    return markup.vnc(instance, vnc_links(instance, getattr(request, "user", None)),
                      buttons=buttons)


@register.filter
def usage_text(instance):
    return _usage_text(instance) or "—"
