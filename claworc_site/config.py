"""Validation of Claworc's own environment variables.

Settings call these so that a wrong value stops start-up with a message naming the variable,
instead of failing later inside a request or a task.
"""

from django.core.exceptions import ImproperlyConfigured


def env_int(env, name: str, default: int) -> int:
    raw = env.str(name, default=str(default))
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}") from None


def port_range(env) -> tuple[int, int]:
    start = env_int(env, "CLAWORC_PORT_START", 30100)
    end = env_int(env, "CLAWORC_PORT_END", 30199)
    for name, value in (("CLAWORC_PORT_START", start), ("CLAWORC_PORT_END", end)):
        if not 1 <= value <= 65535:
            raise ImproperlyConfigured(f"{name} must be a TCP port (1-65535), got {value}")
    if start % 2:
        raise ImproperlyConfigured(
            f"CLAWORC_PORT_START must be even (even = Chrome VNC, odd = Terminal VNC), got {start}"
        )
    if end <= start:
        raise ImproperlyConfigured(
            f"CLAWORC_PORT_END ({end}) must be greater than CLAWORC_PORT_START ({start})"
        )
    return start, end


def env_bool(env, name: str, default: bool) -> bool:
    raw = env.str(name, default="true" if default else "false").strip().lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")
