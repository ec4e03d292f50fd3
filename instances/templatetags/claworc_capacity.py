"""`{% capacity_budget %}`: the capacity budget in use (docs/capacity.md), for the admin index
and the status list."""

from django import template

from instances.services import capacity

register = template.Library()


@register.inclusion_tag("instances/_capacity.html")
def capacity_budget(module=False):
    """The budget line ("CPU 3.5 / 4 · memory 6 / 16 GiB"), or why there is none; `module`:
    as a block of the admin index. Two queries."""
    return {"budget": capacity.budget(), "module": module}
