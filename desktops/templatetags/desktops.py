"""{% load desktops %}: the desktop links of an instance in the current access mode, for the
status pages and the admin (`{% desktop_links instance as links %}`, `{% desktop_access %}`)."""

from django import template

from ..selectors import access_description
from ..selectors import desktop_links as _desktop_links

register = template.Library()


@register.simple_tag(takes_context=True)
def desktop_links(context, instance):
    request = context.get("request")
    return _desktop_links(instance, user=getattr(request, "user", None))


@register.simple_tag
def desktop_access():
    return access_description()
