"""Validation at the door: what either backend would refuse is refused here, before anything is
saved or queued, with a message naming the field.
"""

import json
import math
import re
from decimal import Decimal

from django.core.exceptions import ValidationError

from orchestrators.quantity import parse_bytes, parse_cpu

# `<name>-vnc` (the Kubernetes Service) is the longest derived name and must fit a 63-char label.
NAME_MAX_LENGTH = 63 - len("-vnc")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

#: Docker refuses a memory limit below 6 MiB ("Minimum memory limit allowed is 6MB").
MEMORY_MIN_BYTES = 6 * 2**20
#: Docker's smallest CPU limit ("Range of CPUs is from 0.01 to ...").
CPU_MIN = Decimal("0.01")
#: clawdbot.json is a small settings file; these bounds keep a bad paste from costing the
#: database, the config file and every page that shows it.
CONFIG_MAX_BYTES = 256 * 1024
CONFIG_MAX_DEPTH = 32


def validate_instance_name(value: str) -> None:
    if not value:
        raise ValidationError("The name is empty.", code="empty")
    if len(value) > NAME_MAX_LENGTH:
        raise ValidationError(
            f"The name is {len(value)} characters; at most {NAME_MAX_LENGTH} are allowed "
            "so that '<name>-vnc' stays within 63.",
            code="too_long",
        )
    if value.startswith("-") or value.endswith("-"):
        raise ValidationError("The name must not start or end with '-'.", code="edge_dash")
    if not _DNS_LABEL.match(value):
        bad = sorted({c for c in value if not re.match(r"[a-z0-9-]", c)})
        shown = ", ".join(repr(c) for c in bad)
        raise ValidationError(
            f"The name may only contain lowercase letters, digits and '-' (found {shown}).",
            code="invalid_chars",
        )
    # The Kubernetes Service `<name>-vnc` is a DNS-1035 label: a leading digit is refused by a
    # real cluster, after the volumes, Secret and ConfigMap were already made.
    if not value[0].isalpha():
        raise ValidationError(
            "The name must start with a letter (Kubernetes Service names do).",
            code="leading_digit",
        )


def validate_cpu(value: str) -> None:
    try:
        parse_cpu(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="cpu") from None


def validate_size(value: str) -> None:
    try:
        parse_bytes(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="size") from None


def resource_errors(*, cpu_request: str, cpu_limit: str, memory_request: str,
                    memory_limit: str, host_cpus: int | None = None) -> dict[str, str]:
    """Errors by field for resources both backends must accept (quantities already parse).

    `host_cpus`: the Docker host's CPU count when Docker runs the instances (Docker refuses a
    limit above it when it creates the container, which would take a running bot down).
    """
    errors: dict[str, str] = {}
    try:
        cpu_req, cpu_lim = parse_cpu(cpu_request), parse_cpu(cpu_limit)
    except ValueError:
        cpu_req = cpu_lim = None
    if cpu_lim is not None:
        if cpu_lim < CPU_MIN:
            errors["cpu_limit"] = f"{cpu_limit} is less than Docker's minimum of 10m (0.01 CPU)."
        elif host_cpus and cpu_lim > host_cpus:
            errors["cpu_limit"] = (
                f"{cpu_limit} is more than the Docker host has: {host_cpus} CPU"
                f"{'s' if host_cpus != 1 else ''}.")
        elif cpu_req > cpu_lim:
            errors["cpu_request"] = (
                f"The CPU request {cpu_request} is more than the limit {cpu_limit}.")
    try:
        mem_req, mem_lim = parse_bytes(memory_request), parse_bytes(memory_limit)
    except ValueError:
        mem_req = mem_lim = None
    if mem_lim is not None:
        if mem_lim < MEMORY_MIN_BYTES:
            errors["memory_limit"] = f"{memory_limit} is less than Docker's minimum of 6Mi."
        elif mem_req > mem_lim:
            errors["memory_request"] = (
                f"The memory request {memory_request} is more than the limit {memory_limit}.")
    return errors


# --- image references ---------------------------------------------------------------------------
# The grammar of a Docker image reference (domain[:port]/path[:tag][@digest]), as the registry
# specification defines it: lowercase path components, a tag of at most 128 characters.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_IMAGE_REF = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)
IMAGE_MAX_LENGTH = 255


def validate_image(value: str) -> None:
    """An image reference such as `glukw/openclaw-vnc-chrome:latest` (empty: the default)."""
    if not value:
        return
    if len(value) > IMAGE_MAX_LENGTH or not _IMAGE_REF.match(value):
        raise ValidationError(
            "Not an image reference: expected [registry[:port]/]repository[:tag][@digest] "
            "in lowercase, for example glukw/openclaw-vnc-chrome:latest.",
            code="image",
        )


# --- clawdbot.json ------------------------------------------------------------------------------

def _config_error(message: str, code: str) -> ValidationError:
    return ValidationError(message, code=code)


def check_config_text(text: str) -> None:
    """Bounds checked on the raw text before parsing: a huge or deeply nested document must not
    reach the parser (whose recursion would fail with a server error)."""
    if len(text.encode("utf-8", "surrogatepass")) > CONFIG_MAX_BYTES:
        raise _config_error(
            f"The config is larger than {CONFIG_MAX_BYTES // 1024} KiB.", "config_size")
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > CONFIG_MAX_DEPTH:
                break
        elif ch in "]}":
            depth -= 1
    if deepest > CONFIG_MAX_DEPTH:
        raise _config_error(
            f"The config is nested more than {CONFIG_MAX_DEPTH} levels deep.", "config_depth")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_config_text(text: str):
    """Parse clawdbot.json text strictly (no NaN/Infinity) within the bounds above."""
    check_config_text(text)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise _config_error(f"The config is not valid JSON: {exc}", "json") from None


def validate_config(value) -> None:
    """clawdbot.json: a JSON object, bounded in size and depth, without NaN, Infinity or NUL."""
    if isinstance(value, str | bytes):
        value = parse_config_text(value.decode() if isinstance(value, bytes) else value)
    if not isinstance(value, dict):
        raise _config_error(
            "The config must be a JSON object ({...}), as clawdbot.json is; "
            f"got {_json_kind(value)}.", "json_object")
    # Iterative walk: a value built in code can be nested deeper than the recursion limit.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > CONFIG_MAX_DEPTH:
            raise _config_error(
                f"The config is nested more than {CONFIG_MAX_DEPTH} levels deep.",
                "config_depth")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise _config_error("Config keys must be strings.", "config_key")
                if "\x00" in key:
                    raise _config_error("The config contains a NUL character.", "config_nul")
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise _config_error("The config contains NaN or Infinity, which JSON does not allow.",
                                "config_nan")
        elif isinstance(item, str) and "\x00" in item:
            raise _config_error("The config contains a NUL character.", "config_nul")
        elif not (item is None or isinstance(item, bool | int | float | str)):
            raise _config_error(f"The config holds a {type(item).__name__}, which is not JSON.",
                                "config_type")
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > CONFIG_MAX_BYTES:
        raise _config_error(
            f"The config is larger than {CONFIG_MAX_BYTES // 1024} KiB.", "config_size")


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
