"""Every state change of instances, ports and settings goes through a function here."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import IntegrityError, transaction

from .models import Instance, PortAllocation

logger = logging.getLogger(__name__)


class PortRangeFull(Exception):
    """No free Chrome/Terminal pair is left in CLAWORC_PORT_START..CLAWORC_PORT_END."""


def _free_even_ports(start: int, end: int, used: set[int]):
    for port in range(start, end, 2):  # the pair needs port+1 <= end
        if port not in used:
            yield port


def ports_allocate(*, instance: Instance, attempts: int = 20) -> PortAllocation:
    """Give `instance` the lowest free even/odd pair; return its existing pair if it has one.

    The unique columns decide races: a loser retries with the next free port, so two workers can
    never hold the same pair.
    """
    existing = PortAllocation.objects.filter(instance=instance).first()
    if existing:
        return existing
    start, end = settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END
    for _ in range(attempts):
        used = set(
            PortAllocation.objects.filter(port_chrome__gte=start, port_chrome__lte=end)
            .values_list("port_chrome", flat=True)
        )
        port = next(_free_even_ports(start, end, used), None)
        if port is None:
            raise PortRangeFull(
                f"No free port pair between CLAWORC_PORT_START={start} and "
                f"CLAWORC_PORT_END={end}; delete an instance or widen the range."
            )
        try:
            with transaction.atomic():
                return PortAllocation.objects.create(
                    instance=instance, port_chrome=port, port_terminal=port + 1
                )
        except IntegrityError:
            existing = PortAllocation.objects.filter(instance=instance).first()
            if existing:
                return existing
            logger.debug("port %s taken concurrently while allocating for %s", port, instance.name)
    raise PortRangeFull(
        f"Could not allocate a port pair for {instance.name} after {attempts} attempts; "
        "too many concurrent allocations, try again."
    )


def ports_free(*, instance: Instance) -> None:
    PortAllocation.objects.filter(instance=instance).delete()
