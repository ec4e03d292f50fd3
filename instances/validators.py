import json
import re

from django.core.exceptions import ValidationError

from orchestrators.quantity import parse_bytes, parse_cpu

# `<name>-vnc` (the Kubernetes Service) is the longest derived name and must fit a 63-char label.
NAME_MAX_LENGTH = 63 - len("-vnc")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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


def validate_config(value) -> None:
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValidationError(f"The config is not valid JSON: {exc}", code="json") from None
    if not isinstance(value, dict):
        raise ValidationError(
            "The config must be a JSON object ({...}), as clawdbot.json is.", code="json_object"
        )
