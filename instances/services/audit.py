"""Who acts, and what was done: the actor of a change and its Activity record (both sides)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

from ..models import Activity

logger = logging.getLogger(__name__)

SYSTEM = "system"
_actor: contextvars.ContextVar[str] = contextvars.ContextVar("claworc_actor", default=SYSTEM)

@contextlib.contextmanager
def acting_as(actor: str | None) -> Iterator[None]:
    """Attribute what happens inside (including signal-driven provisioning) to `actor`."""
    token = _actor.set(actor or SYSTEM)
    try:
        yield
    finally:
        _actor.reset(token)


def current_actor() -> str:
    return _actor.get()


def activity_record(
    *, instance_name: str, action: str, result: str, message: str = "",
    instance_id: int | None = None, actor: str | None = None,
) -> Activity:
    return Activity.objects.create(
        instance_id=instance_id, instance_name=instance_name, action=action,
        actor=actor or current_actor(), result=result, message=message,
    )
