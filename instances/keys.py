"""API keys: global ones in Setting, per-instance overrides on Instance, Fernet-encrypted at rest.

The encryption keys come from CLAWORC_ENCRYPTION_KEY (comma-separated, newest first) and are
never stored in the database.
"""

from __future__ import annotations

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .models import Instance, Setting

# Environment variable names injected into every instance; extend here.
KEY_NAMES: tuple[str, ...] = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "BRAVE_API_KEY")
GLOBAL_PREFIX = "api_key:"


class UnreadableKey(Exception):
    """A stored value that none of the configured encryption keys can decrypt."""


@lru_cache(maxsize=4)
def _fernet(raw: str) -> MultiFernet:
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise ImproperlyConfigured(
            "CLAWORC_ENCRYPTION_KEY is not set; generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
        )
    try:
        return MultiFernet([Fernet(k) for k in keys])
    except ValueError:
        raise ImproperlyConfigured(
            "CLAWORC_ENCRYPTION_KEY holds a value that is not a Fernet key "
            "(32 url-safe base64-encoded bytes)"
        ) from None


def fernet() -> MultiFernet:
    return _fernet(settings.CLAWORC_ENCRYPTION_KEY)


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise UnreadableKey("unreadable — re-enter") from None


def get_global_keys() -> dict[str, str]:
    """Global keys by env name; an unreadable one is left out."""
    rows = Setting.objects.filter(key__startswith=GLOBAL_PREFIX).values_list("key", "value")
    keys = {}
    for key, token in rows:
        name = key.removeprefix(GLOBAL_PREFIX)
        if name in KEY_NAMES and token:
            try:
                keys[name] = decrypt(token)
            except UnreadableKey:
                continue
    return keys


def set_global_key(name: str, value: str) -> None:
    if name not in KEY_NAMES:
        raise ValueError(f"unknown API key name {name!r}; known: {', '.join(KEY_NAMES)}")
    if value:
        Setting.set(GLOBAL_PREFIX + name, encrypt(value))
    else:
        Setting.objects.filter(key=GLOBAL_PREFIX + name).delete()


def get_overrides(instance: Instance) -> dict[str, str]:
    if not instance.encrypted_api_keys:
        return {}
    return json.loads(decrypt(instance.encrypted_api_keys))


def set_overrides(instance: Instance, overrides: dict[str, str]) -> None:
    """Store the overrides on the instance (the caller saves it). Empty values are dropped."""
    unknown = set(overrides) - set(KEY_NAMES)
    if unknown:
        raise ValueError(f"unknown API key names: {', '.join(sorted(unknown))}")
    clean = {k: v for k, v in overrides.items() if v}
    instance.encrypted_api_keys = encrypt(json.dumps(clean)) if clean else ""


def effective_env(instance: Instance) -> dict[str, str]:
    """Globals overlaid with the instance's overrides: the environment the agent gets."""
    env = get_global_keys()
    env.update(get_overrides(instance))
    return env


def mask(value: str) -> str:
    return "****" + value[-4:] if value else ""
