"""The capacity budget: what the backend lets instances use together, what they hold, and whether
one more fits (docs/capacity.md).

What the backend has is read from it by a worker (at detection and by reconcile_all when due) and
kept in the `host_capacity` Setting (orchestrators.registry.record_capacity); the web side only
reads that row. What instances hold is summed from their rows: every instance whose desired
state is running counts (a starting one too, an `error` one too: it is meant to run), except
those being deleted. Docker: the sum of CPU requests against the host's CPUs ×
CLAWORC_CPU_OVERCOMMIT and the sum of memory limits against its memory ×
CLAWORC_MEMORY_OVERCOMMIT. Kubernetes: each resource a ResourceQuota bounds (requests.cpu,
limits.cpu, requests.memory, limits.memory, pods), less what other workloads hold of it.

Admission happens in the transaction that records the intent, after the instance rows are
locked, under a lock on the `host_capacity` row (SELECT ... FOR UPDATE on PostgreSQL; SQLite
transactions are IMMEDIATE, so writers already run one at a time): two sessions or workers
racing for the last slot see each other's intent, and one of them is refused.

  budget(exclude_pk=None) -> Budget | None      a read (status pages, the admin index)
  locked_budget(exclude_pk=None) -> Budget | None   the same under the lock (admission)
  admit_starts(rows) -> (admitted, refused)      for instance_start / restart / recreate
  check_fits(...)                                 create and resize: raises CapacityExceeded
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from orchestrators import registry
from orchestrators.base import HostCapacity
from orchestrators.quantity import parse_bytes, parse_cpu

from ..models import Instance, Setting

#: The budget's resources and the Instance field each is summed from.
FIELDS = {"requests.cpu": "cpu_request", "limits.cpu": "cpu_limit",
          "requests.memory": "memory_request", "limits.memory": "memory_limit"}
#: The fields whose change is a resize: it is admitted again.
RESIZE_FIELDS = frozenset(FIELDS.values())
_ZERO = Decimal(0)
_GIB = Decimal(2**30)
_MIB = Decimal(2**20)


class CapacityExceeded(ValidationError):
    """A create or resize does not fit the budget; nothing was saved. The message is on the
    field that asks for too much (a form shows it there)."""


def needs_of(*, cpu_request: str, cpu_limit: str, memory_request: str,
             memory_limit: str) -> dict[str, Decimal]:
    """What one running instance holds of each resource (a quantity that does not parse holds
    nothing: the field's own validator refuses it)."""
    held = {"pods": Decimal(1)}
    for key, value in (("requests.cpu", cpu_request), ("limits.cpu", cpu_limit),
                       ("requests.memory", memory_request), ("limits.memory", memory_limit)):
        try:
            held[key] = (parse_cpu(value) if key.endswith("cpu")
                         else Decimal(parse_bytes(value)))
        except ValueError:
            held[key] = _ZERO
    return held


def _needs_of_row(row) -> dict[str, Decimal]:
    return needs_of(**{f: getattr(row, f) for f in RESIZE_FIELDS})


# --- how numbers are shown ---------------------------------------------------------------------

def _cores(value: Decimal) -> str:
    return format(max(value, _ZERO).quantize(Decimal("0.001")).normalize(), "f")


def _bytes_unit(total: Decimal) -> tuple[Decimal, str]:
    return (_GIB, "GiB") if total >= _GIB or total == 0 else (_MIB, "MiB")


def _amount(value: Decimal, unit: Decimal) -> str:
    return format((max(value, _ZERO) / unit).quantize(Decimal("0.01")).normalize(), "f")


def _size(value: Decimal) -> str:
    unit, name = _bytes_unit(value)
    return f"{_amount(value, unit)} {name}"


def show(key: str, value: Decimal) -> str:
    """"2 CPU", "4 GiB", "3 pods"."""
    if key.endswith("cpu"):
        return f"{_cores(value)} CPU"
    if key.endswith("memory"):
        return _size(value)
    return f"{int(max(value, _ZERO))} pods"


_LABELS = {"requests.cpu": "CPU", "limits.cpu": "CPU limits",
           "requests.memory": "memory requests", "limits.memory": "memory", "pods": "pods"}


# --- the budget --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Budget:
    """What instances may hold together (`totals`, overcommit applied, other workloads' share
    taken off) and what the counted ones hold (`used`)."""

    totals: Mapping[str, Decimal]
    used: Mapping[str, Decimal]
    running: int
    per_instance_max: Mapping[str, Decimal] = field(default_factory=dict)
    host: bool = True
    source: str = ""

    def free(self, key: str) -> Decimal:
        return self.totals[key] - self.used.get(key, _ZERO)

    def short(self, needs: Mapping[str, Decimal]) -> list[str]:
        """The resources `needs` does not fit in, in budget order."""
        return [k for k in self.totals if needs.get(k, _ZERO) > self.free(k)]

    def plus(self, needs: Mapping[str, Decimal]) -> Budget:
        used = dict(self.used)
        for key, value in needs.items():
            used[key] = used.get(key, _ZERO) + value
        return dataclasses.replace(self, used=used, running=self.running + 1)

    @property
    def over(self) -> bool:
        """More is held than the budget allows (the host shrank, the settings changed)."""
        return any(self.free(k) < 0 for k in self.totals)

    def _shown_keys(self, short: Sequence[str]) -> list[str]:
        """One CPU and one memory resource, the one that does not fit first; then pods."""
        keys = []
        for kind in ("cpu", "memory"):
            bounded = [k for k in self.totals if k.endswith(kind)]
            keys += [next((k for k in bounded if k in short), bounded[0])] if bounded else []
        return keys + (["pods"] if "pods" in short else [])

    def refusal(self, needs: Mapping[str, Decimal]) -> str:
        """Why `needs` does not fit ("" when it does): "needs 2 CPU / 4 GiB; 0.5 CPU / 1 GiB
        free of 4 CPU / 16 GiB; 3 instances running"."""
        limits = self._over_per_instance(needs)
        short = self.short(needs)
        if not short:
            return limits
        keys = self._shown_keys(short)

        def pair(values):
            return " / ".join(show(k, v) for k, v in zip(keys, values, strict=True))

        named = "" if self.host and set(keys) <= {"requests.cpu", "limits.memory"} else (
            f" ({', '.join(keys)} of {self.source})" if self.source else "")
        text = (f"needs {pair([needs.get(k, _ZERO) for k in keys])}; "
                f"{pair([self.free(k) for k in keys])} free of "
                f"{pair([self.totals[k] for k in keys])}; "
                f"{self.running} instance{'s' if self.running != 1 else ''} running{named}")
        return "; ".join(filter(None, [text, limits]))

    def _over_per_instance(self, needs: Mapping[str, Decimal]) -> str:
        # Docker's own bound (a CPU limit above the host's CPUs) is the form's check already.
        if self.host:
            return ""
        over = [f"{show('limits.' + what, needs.get('limits.' + what, _ZERO))} is more than "
                f"the {show('limits.' + what, most)} one instance may have ({self.source})"
                for what, most in self.per_instance_max.items()
                if needs.get(f"limits.{what}", _ZERO) > most]
        return "; ".join(over)

    def summary(self) -> str:
        """"CPU 3.5 / 4 · memory 6 / 16 GiB" (and pods, CPU limits... when a quota bounds them)."""
        parts = []
        for key, total in self.totals.items():
            used = self.used.get(key, _ZERO)
            if key.endswith("memory"):
                unit, name = _bytes_unit(total)
                parts.append(f"{_LABELS[key]} {_amount(used, unit)} / {_amount(total, unit)} "
                             f"{name}")
            elif key.endswith("cpu"):
                parts.append(f"{_LABELS[key]} {_cores(used)} / {_cores(total)}")
            else:
                parts.append(f"pods {int(used)} / {int(total)}")
        if not parts:  # a LimitRange alone: one instance is bounded, not their sum
            parts = [f"at most {show('limits.' + what, most)} per instance"
                     for what, most in self.per_instance_max.items()]
        return " · ".join(parts)


def _factors() -> dict[str, Decimal]:
    cpu = Decimal(settings.CLAWORC_CPU_OVERCOMMIT)
    memory = Decimal(settings.CLAWORC_MEMORY_OVERCOMMIT)
    return {"requests.cpu": cpu, "limits.cpu": cpu,
            "requests.memory": memory, "limits.memory": memory}


def _budget_from(capacity: HostCapacity | None, *, exclude_pk: int | None) -> Budget | None:
    if capacity is None or not (capacity.totals or capacity.per_instance_max):
        return None
    factors = _factors() if capacity.host else {}
    totals = {k: capacity.totals[k] * factors.get(k, 1) - capacity.others.get(k, _ZERO)
              for k in ("requests.cpu", "limits.cpu", "requests.memory", "limits.memory", "pods")
              if k in capacity.totals}
    rows = (Instance.objects.filter(desired_state=Instance.DesiredState.RUNNING)
            .exclude(status=Instance.Status.DELETING))
    if exclude_pk is not None:
        rows = rows.exclude(pk=exclude_pk)
    used: dict[str, Decimal] = {}
    running = 0
    for values in rows.values_list(*FIELDS.values()):
        running += 1
        for key, value in needs_of(**dict(zip(FIELDS.values(), values, strict=True))).items():
            used[key] = used.get(key, _ZERO) + value
    return Budget(totals=totals, used=used, running=running,
                  per_instance_max=dict(capacity.per_instance_max), host=capacity.host,
                  source=capacity.source)


_UNREAD = object()


def budget(*, exclude_pk: int | None = None, recorded=_UNREAD) -> Budget | None:
    """The budget and what is held of it now; None when the backend sets no bound (or was never
    read). Two queries; one when `recorded` (registry.recorded_capacity()) was read already."""
    if recorded is _UNREAD:
        recorded = registry.recorded_capacity()
    return _budget_from(recorded, exclude_pk=exclude_pk)


def locked_budget(*, exclude_pk: int | None = None) -> Budget | None:
    """`budget()`, holding the budget's lock until the transaction ends (outside one, a read)."""
    found = Setting.objects.filter(key=registry.CAPACITY_KEY)
    if transaction.get_connection().in_atomic_block:
        found = found.select_for_update()
    raw = found.values_list("value", flat=True).first()
    if not raw:
        return None
    return _budget_from(registry.recorded_capacity(raw), exclude_pk=exclude_pk)


def refusal_text(name: str, reason: str) -> str:
    return f"Not enough capacity for {name}: {reason}. Nothing was changed."


def admit_starts(rows: Iterable[Instance]) -> tuple[list[Instance], list[tuple[str, str]]]:
    """Of `rows` (locked, in the order to admit them), those that may run, and (name, reason)
    for those that do not fit. A row already meant to run is counted already: it passes."""
    rows = list(rows)
    if all(r.desired_state == Instance.DesiredState.RUNNING for r in rows):
        return rows, []
    current = locked_budget()
    if current is None:
        return rows, []
    admitted, refused = [], []
    for row in rows:
        if row.desired_state == Instance.DesiredState.RUNNING:
            admitted.append(row)
            continue
        needs = _needs_of_row(row)
        reason = current.refusal(needs)
        if reason:
            refused.append((row.name, f"not enough capacity: {reason}"))
            continue
        current = current.plus(needs)
        admitted.append(row)
    return admitted, refused


def fit_errors(*, name: str, pk: int | None, desired_state: str, cpu_request: str,
               cpu_limit: str, memory_request: str, memory_limit: str,
               lock: bool = True) -> dict[str, str]:
    """{field: message} when an instance with these values, meant to run, does not fit (with
    itself, when it exists, left out of what is held); {} when it fits or is not to run."""
    if desired_state != Instance.DesiredState.RUNNING:
        return {}
    current = (locked_budget if lock else budget)(exclude_pk=pk)
    if current is None:
        return {}
    needs = needs_of(cpu_request=cpu_request, cpu_limit=cpu_limit,
                     memory_request=memory_request, memory_limit=memory_limit)
    reason = current.refusal(needs)
    if not reason:
        return {}
    short = current.short(needs) or [
        f"limits.{w}" for w, most in current.per_instance_max.items()
        if needs.get(f"limits.{w}", _ZERO) > most]
    where = FIELDS.get(short[0], "cpu_request") if short else "cpu_request"
    return {where: refusal_text(name, reason)}


def check_fits(*, instance: Instance) -> None:
    """Raise CapacityExceeded when `instance` (being created or resized, meant to run) does not
    fit the budget, under the budget's lock (call it inside the saving transaction)."""
    errors = fit_errors(name=instance.name, pk=instance.pk, desired_state=instance.desired_state,
                        **{f: getattr(instance, f) for f in RESIZE_FIELDS})
    if errors:
        raise CapacityExceeded(errors)
