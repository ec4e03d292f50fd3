"""Kubernetes resource quantities: validated once, converted for backends that need numbers."""

import re
from decimal import Decimal, InvalidOperation

_CPU = re.compile(r"^(?P<num>\d+(\.\d+)?)(?P<milli>m?)$")
_BYTES = re.compile(r"^(?P<num>\d+(\.\d+)?)(?P<unit>Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_BYTE_UNITS = {
    None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_cpu(value: str) -> Decimal:
    """CPU cores: "500m" -> 0.5, "2" -> 2. ValueError when it is not a CPU quantity."""
    m = _CPU.match(value or "")
    if not m:
        raise ValueError(f"{value!r} is not a CPU quantity (examples: 500m, 2, 1.5)")
    try:
        cores = Decimal(m["num"])
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a CPU quantity") from None
    cores = cores / 1000 if m["milli"] else cores
    if cores <= 0:
        raise ValueError(f"{value!r} must be more than zero")
    return cores


def parse_bytes(value: str) -> int:
    """Bytes: "1Gi" -> 1073741824. ValueError when it is not a memory/storage quantity."""
    m = _BYTES.match(value or "")
    if not m:
        raise ValueError(f"{value!r} is not a size (examples: 512Mi, 4Gi, 10G)")
    size = int(Decimal(m["num"]) * _BYTE_UNITS[m["unit"]])
    if size <= 0:
        raise ValueError(f"{value!r} must be more than zero")
    return size
