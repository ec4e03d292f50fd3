"""State changes of API keys: store them encrypted, then converge the instances that use them.

A changed key reaches an instance only by recreating its workload (Docker has no way to change
a running container's environment; Kubernetes restarts the pod after patching the Secret), so
every change here ends in `instances_reconcile` for exactly the instances whose effective
environment changed. Messages and logs carry key names, never values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.fernet import InvalidToken
from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from . import keys
from .models import Instance, Setting

logger = logging.getLogger(__name__)

RESTART_NOTE = "the instance restarts briefly to pick it up (its volumes are kept)"


def _reconcile(*, instance_ids: list[int], actor: str, message: str) -> None:
    if not instance_ids:
        return
    from .services import instances_reconcile

    instances_reconcile(instance_ids=instance_ids, actor=actor, action="api_keys",
                        message=message)


@sensitive_variables()
def instances_using_global(names: Iterable[str]) -> list[int]:
    """Ids of the instances whose environment takes at least one of `names` from the globals.

    An instance whose overrides cannot be decrypted is included: its reconcile reports the
    unreadable overrides, which is better than silently keeping a stale environment.
    """
    names = set(names)
    ids = []
    for instance in Instance.objects.only("pk", "name", "encrypted_api_keys").order_by("pk"):
        try:
            overridden = set(keys.get_overrides(instance))
        except keys.UnreadableKey:
            overridden = set()
        if names - overridden:
            ids.append(instance.pk)
    return ids


def _describe(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


@sensitive_variables()
def api_keys_update_global(
    *, values: Mapping[str, str] | None = None, clear: Iterable[str] = (), actor: str = "system"
) -> list[str]:
    """Set the non-empty `values` and remove the `clear` names from the global keys.

    An empty value keeps the stored key; a value equal to the stored one changes nothing.
    Every instance without an override for a changed key is converged (recreated with the new
    environment). Returns the changed names, sorted.
    """
    values = {name: keys.normalize_key(value) for name, value in (values or {}).items()}
    clear = set(clear)
    keys._check_names([*values, *clear])
    both = sorted(name for name in clear if values.get(name))
    if both:
        raise ValueError(f"{_describe(both)}: either enter a new key or clear it, not both.")
    changed = []
    with transaction.atomic():
        rows = {
            row.key.removeprefix(keys.GLOBAL_PREFIX): row
            for row in Setting.objects.select_for_update().filter(
                key__in=[keys.GLOBAL_PREFIX + name for name in [*values, *clear]])
        }
        for name, value in sorted(values.items()):
            if not value:
                continue
            row = rows.get(name)
            if row and row.value:
                try:
                    if keys.decrypt(row.value) == value:
                        continue
                except keys.UnreadableKey:
                    pass  # replacing an unreadable value is a change
            keys.set_global_key(name, value)
            changed.append(name)
        for name in sorted(clear):
            if name in rows:
                rows[name].delete()
                changed.append(name)
        changed.sort()
        if changed:
            ids = instances_using_global(changed)
            logger.info("global API keys %s changed by %s; converging %d instances",
                        _describe(changed), actor, len(ids))
            _reconcile(instance_ids=ids, actor=actor,
                       message=f"Global {_describe(changed)} changed; {RESTART_NOTE}.")
    return changed


@sensitive_variables()
def api_keys_set_global(*, name: str, value: str, actor: str = "system") -> bool:
    """Set one global key, or remove it when `value` is empty. True when it changed."""
    if value:
        return bool(api_keys_update_global(values={name: value}, actor=actor))
    return bool(api_keys_update_global(clear=[name], actor=actor))


@sensitive_variables()
def api_keys_set_overrides(
    *,
    instance: Instance,
    values: Mapping[str, str] | None = None,
    clear: Iterable[str] = (),
    actor: str = "system",
    reconcile: bool = True,
) -> list[str]:
    """Set the non-empty `values` and remove the `clear` names from the instance's overrides.

    An empty value keeps the stored override; a removed override falls back to the global key.
    When the stored overrides cannot be decrypted, any edit replaces them with what was entered
    (the unreadable ones are gone either way). Converges the instance when something changed
    and `reconcile` is set (a new instance is reconciled by its creation). Returns the changed
    names, sorted; `instance.encrypted_api_keys` is refreshed.
    """
    values = {name: keys.normalize_key(value) for name, value in (values or {}).items()}
    values = {name: value for name, value in values.items() if value}
    clear = set(clear)
    keys._check_names([*values, *clear])
    both = sorted(name for name in clear if name in values)
    if both:
        raise ValueError(f"{_describe(both)}: either enter a new key or clear it, not both.")
    with transaction.atomic():
        locked = Instance.objects.select_for_update().only(
            "pk", "name", "encrypted_api_keys").get(pk=instance.pk)
        try:
            current = keys.get_overrides(locked)
            unreadable = False
        except keys.UnreadableKey:
            current, unreadable = {}, True
        if unreadable and not values and not clear:
            return []
        new = {k: v for k, v in current.items() if k not in clear}
        new.update(values)
        changed = {name for name in {*current, *new} if current.get(name) != new.get(name)}
        if unreadable:
            changed |= clear
        if not changed:
            return []
        changed = sorted(changed)
        token = keys.encode_overrides(new)
        # update(), not save(): only this column changes, and no post_save signal enqueues a
        # second reconcile on top of the one below.
        Instance.objects.filter(pk=locked.pk).update(
            encrypted_api_keys=token, updated_at=timezone.now())
        instance.encrypted_api_keys = token
        instance.remember_saved_spec(fields=["encrypted_api_keys"])  # saved, and converged here
        logger.info("API key overrides %s of %s changed by %s", _describe(changed),
                    locked.name, actor)
        if reconcile:
            _reconcile(instance_ids=[locked.pk], actor=actor,
                       message=f"API key override {_describe(changed)} changed; {RESTART_NOTE}.")
    return changed


@dataclass
class Reencryption:
    """What `api_keys_reencrypt` did, by count and location (never values)."""

    reencrypted: int = 0
    unreadable: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)


@sensitive_variables()
def api_keys_reencrypt(*, forget_unreadable: bool = False, actor: str = "system") -> Reencryption:
    """Re-encrypt every stored value with the newest CLAWORC_ENCRYPTION_KEY entry.

    Plain values do not change, so nothing is converged, except with `forget_unreadable`:
    values no configured key can read are then deleted, and the instances whose environment
    loses them are converged.
    """
    report = Reencryption()
    forgotten_globals: list[str] = []
    forgotten_instances: list[int] = []
    with transaction.atomic():
        for row in Setting.objects.select_for_update().filter(
                key__startswith=keys.GLOBAL_PREFIX).exclude(value=""):
            where = f"global {row.key.removeprefix(keys.GLOBAL_PREFIX)}"
            try:
                token = keys.rotate_token(row.value)
            except InvalidToken:
                if forget_unreadable:
                    row.delete()
                    report.forgotten.append(where)
                    forgotten_globals.append(row.key.removeprefix(keys.GLOBAL_PREFIX))
                else:
                    report.unreadable.append(where)
                continue
            Setting.objects.filter(pk=row.pk).update(value=token)
            report.reencrypted += 1
        for pk, name, stored in (Instance.objects.select_for_update()
                                 .exclude(encrypted_api_keys="")
                                 .values_list("pk", "name", "encrypted_api_keys")):
            where = f"overrides of {name}"
            try:
                token = keys.rotate_token(stored)
            except InvalidToken:
                if forget_unreadable:
                    token = ""
                    report.forgotten.append(where)
                    forgotten_instances.append(pk)
                else:
                    report.unreadable.append(where)
                    continue
            else:
                report.reencrypted += 1
            # update(): re-encryption is not an edit; no signal, no updated_at change.
            Instance.objects.filter(pk=pk).update(encrypted_api_keys=token)
        if forgotten_globals:
            _reconcile(instance_ids=instances_using_global(forgotten_globals), actor=actor,
                       message=f"Unreadable global {_describe(forgotten_globals)} removed; "
                       f"{RESTART_NOTE}.")
        if forgotten_instances:
            _reconcile(instance_ids=forgotten_instances, actor=actor,
                       message=f"Unreadable API key overrides removed; {RESTART_NOTE}.")
    logger.info("re-encrypted %d stored API key values; %d unreadable, %d forgotten",
                report.reencrypted, len(report.unreadable), len(report.forgotten))
    return report
