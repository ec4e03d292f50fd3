"""Validation of Claworc's own environment variables.

Settings call these so that a wrong value stops start-up with a message naming the variable,
instead of failing later inside a request or a task.
"""

import json
import os
import re
import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def env_int(env, name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env.str(name, default=str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(env, name: str, default: float, *, minimum: float | None = None) -> float:
    raw = env.str(name, default=str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name} must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum:g}, got {value:g}")
    return value


def env_overcommit(env, name: str, default: str = "1.0") -> Decimal:
    """A factor the host's CPUs or memory are multiplied by for the budget: more than 0 (below 1
    keeps some of the host back for itself), at most 100."""
    raw = env.str(name, default=default).strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(
            f"{name} must be a number such as 1.0 or 1.5, got {raw!r}") from None
    if not value.is_finite() or not Decimal(0) < value <= 100:
        raise ImproperlyConfigured(f"{name} must be more than 0 and at most 100, got {raw}")
    return value


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


#: Kubernetes' default --service-node-port-range: a NodePort outside it is refused.
NODE_PORT_RANGE = (30000, 32767)
EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


def ephemeral_port_range(path: str = EPHEMERAL_RANGE_FILE) -> tuple[int, int] | None:
    """The kernel's range for outgoing connections' local ports; None where it cannot be read."""
    try:
        with open(path) as source:
            low, high = (int(part) for part in source.read().split())
    except (OSError, ValueError):
        return None
    return low, high


def port_range_warnings(start: int, end: int, *,
                        ephemeral: tuple[int, int] | None) -> dict[str, str]:
    """Why CLAWORC_PORT_START..CLAWORC_PORT_END may fail on one backend or the other, by check id.

    Warnings, not errors: which backend runs is only known later, and a cluster may have a
    node-port range of its own. docs/performance.md says which range to pick.
    """
    problems = {}
    if ephemeral and start <= ephemeral[1] and end >= ephemeral[0]:
        problems["claworc.W001"] = (
            f"On Docker: CLAWORC_PORT_START..CLAWORC_PORT_END ({start}-{end}) overlaps the "
            f"kernel's ephemeral port range {ephemeral[0]}-{ephemeral[1]} "
            "(net.ipv4.ip_local_port_range), where outgoing connections take ports at random, so "
            "an instance can fail to start with 'address already in use'. Keep the range below "
            f"{ephemeral[0]}, e.g. 30100-32099 for 1,000 instances."
        )
    low, high = NODE_PORT_RANGE
    if start < low or end > high:
        problems["claworc.W002"] = (
            f"On Kubernetes: CLAWORC_PORT_START..CLAWORC_PORT_END ({start}-{end}) is not inside "
            f"the default NodePort range {low}-{high}; the API server refuses NodePorts outside "
            "its --service-node-port-range. Ignore this if your cluster's range covers it."
        )
    return problems


def check_port_range(app_configs=None, **kwargs):
    """System check (manage.py check, migrate, `make run`): the port range suits the backends."""
    from django.conf import settings
    from django.core import checks

    start, end = settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END
    found = port_range_warnings(start, end, ephemeral=ephemeral_port_range())
    hint = f"The range holds {(end - start + 1) // 2} instances (one even/odd pair each)."
    return [checks.Warning(text, hint=hint, id=check_id) for check_id, text in found.items()]


DESKTOP_ACCESS_MODES = ("ports", "both", "proxy")


def env_choice(env, name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.str(name, default=default).strip().lower()
    if raw not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def env_list(env, name: str) -> list[str]:
    """Comma-separated names; blanks dropped."""
    return [item.strip() for item in env.str(name, default="").split(",") if item.strip()]


def env_labels(env, name: str) -> dict[str, str]:
    """`key=value,key=value` (a Kubernetes node selector)."""
    labels = {}
    for item in env_list(env, name):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ImproperlyConfigured(
                f"{name} must be key=value pairs separated by commas, got {item!r}")
        labels[key.strip()] = value.strip()
    return labels


def env_json_list(env, name: str) -> list[dict]:
    """A JSON list of objects (Kubernetes tolerations, in the API's shape)."""
    raw = env.str(name, default="").strip()
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON list: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ImproperlyConfigured(f"{name} must be a JSON list of objects, got {raw!r}")
    return value


def node_port_range(env) -> tuple[int, int]:
    """The cluster's NodePort range (kube-apiserver --service-node-port-range)."""
    raw = env.str("CLAWORC_K8S_NODE_PORT_RANGE", default="30000-32767")
    low, sep, high = raw.partition("-")
    try:
        if not sep:
            raise ValueError
        low_port, high_port = int(low), int(high)
    except ValueError:
        raise ImproperlyConfigured(
            f"CLAWORC_K8S_NODE_PORT_RANGE must look like 30000-32767, got {raw!r}") from None
    if not 1 <= low_port < high_port <= 65535:
        raise ImproperlyConfigured(
            f"CLAWORC_K8S_NODE_PORT_RANGE must be two ports, low-high, got {raw!r}")
    return low_port, high_port


def data_file(data_dir: Path, name: str) -> str:
    """The stripped contents of `<data_dir>/<name>`, "" when there is no such file."""
    try:
        return (Path(data_dir) / name).read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise ImproperlyConfigured(f"Cannot read {Path(data_dir) / name}: "
                                   f"{exc.strerror or exc}") from None


SITE_ID_FILE = "site-id"
_SITE_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def site_id(env, data_dir: Path) -> str:
    """This installation's identity: CLAWORC_SITE_ID, else the one generated once into
    `<data_dir>/site-id` (so web, worker, beat and `manage.py` agree, and it survives restarts).

    Every workload is labelled with it, so two installations sharing one Docker daemon or one
    Kubernetes namespace never list, adopt or delete each other's workloads. It is a label
    value: lowercase letters, digits and '-', at most 63 characters.
    """
    value = env.str("CLAWORC_SITE_ID", default="").strip()
    source = "CLAWORC_SITE_ID"
    if not value:
        path = Path(data_dir) / SITE_ID_FILE
        source = str(path)
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            value = _generate_site_id(path)
        except OSError as exc:
            raise ImproperlyConfigured(
                f"Cannot read {path}: {exc.strerror or exc}; set CLAWORC_SITE_ID") from None
    if not _SITE_ID_RE.match(value):
        raise ImproperlyConfigured(
            f"The site id from {source} must be lowercase letters, digits and '-' (at most 63), "
            f"got {value!r}")
    return value


def _generate_site_id(path: Path) -> str:
    """Write a new id unless another process (web, worker, beat start together) just did."""
    value = "site-" + secrets.token_hex(6)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(value + "\n")
        try:
            os.link(tmp, path)  # atomic, and fails when the file exists: the first one wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return path.read_text().strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"Cannot write the site id to {path}: {exc.strerror or exc}; set CLAWORC_SITE_ID "
            "or make CLAWORC_DATA_DIR writable") from None
