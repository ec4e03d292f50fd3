"""Port pairs: allocated once per instance by the worker, freed with the row (worker side)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from orchestrators.base import FinalError

from ..models import Instance, PortAllocation

logger = logging.getLogger(__name__)

# --- Ports --------------------------------------------------------------------------------------

class PortRangeFull(FinalError):
    """No free Chrome/Terminal pair is left in CLAWORC_PORT_START..CLAWORC_PORT_END."""


def _free_even_ports(start: int, end: int, used: set[int]):
    for port in range(start, end, 2):  # the pair needs port+1 <= end
        if port not in used:
            yield port


# Any fixed 64-bit number: the advisory lock that makes PostgreSQL allocations take turns.
_PORTS_LOCK_KEY = 0x636C61776F7263  # "claworc"


def _serialize_port_allocations() -> None:
    # On SQLite the IMMEDIATE transaction already holds the database's write lock. PostgreSQL
    # would let every worker race for the same lowest port; the unique columns keep that correct
    # but a loser can lose again and again, so allocations wait for each other instead.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PORTS_LOCK_KEY])


def _lowest_free_port(*, instance: Instance, avoid: set[int] = frozenset(),
                      full: str = "") -> int:
    """The lowest free Chrome port of the range (call inside the serialized transaction).

    The instance's own pair and the ports in `avoid` do not count as free.
    """
    start, end = settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END
    used = set(
        PortAllocation.objects.filter(port_chrome__gte=start, port_chrome__lte=end)
        .exclude(instance=instance).values_list("port_chrome", flat=True)
    )
    port = next(_free_even_ports(start, end, used | set(avoid)), None)
    if port is None:
        raise PortRangeFull(
            f"No free port pair between CLAWORC_PORT_START={start} and "
            f"CLAWORC_PORT_END={end}{full}; delete an instance or widen the range."
        )
    return port


def ports_allocate(*, instance: Instance, attempts: int = 20) -> PortAllocation:
    """Give `instance` the lowest free even/odd pair; return its existing pair if it has one.

    Allocations take turns (a transaction-scoped lock); the unique columns are the backstop that
    makes a double allocation impossible even so: a loser retries with the next free port.
    """
    existing = PortAllocation.objects.filter(instance=instance).first()
    if existing:
        return existing
    for _ in range(attempts):
        try:
            with transaction.atomic():
                _serialize_port_allocations()
                port = _lowest_free_port(instance=instance)
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


#: How many times one converge moves an instance to another pair after finding its pair taken
#: outside Claworc, before it gives up with a FinalError: a range full of outside listeners
#: must not make a converge loop.
MAX_PORT_MOVES = 3


def ports_move(*, instance: Instance, avoid: set[int], attempts: int = 20) -> PortAllocation:
    """Give `instance` the lowest free pair whose Chrome port is not in `avoid` (pairs found
    taken outside Claworc), in place of the pair it has: one row, updated in place, so the
    instance never holds two pairs and never none."""
    for _ in range(attempts):
        try:
            with transaction.atomic():
                _serialize_port_allocations()
                port = _lowest_free_port(
                    instance=instance, avoid=avoid,
                    full=" that is not taken outside Claworc; free the ports on the host")
                if not PortAllocation.objects.filter(instance=instance).update(
                        port_chrome=port, port_terminal=port + 1):
                    PortAllocation.objects.create(instance=instance, port_chrome=port,
                                                  port_terminal=port + 1)
                return PortAllocation.objects.get(instance=instance)
        except IntegrityError:
            logger.debug("port %s taken concurrently while moving %s", port, instance.name)
    raise PortRangeFull(
        f"Could not move {instance.name} to another port pair after {attempts} attempts; "
        "too many concurrent allocations, try again."
    )


def ports_free(*, instance: Instance) -> None:
    PortAllocation.objects.filter(instance=instance).delete()
