"""API keys: global ones in Setting, per-instance overrides on Instance, Fernet-encrypted at rest.

The encryption keys come from CLAWORC_ENCRYPTION_KEY (comma-separated, newest first: MultiFernet
encrypts with the first and decrypts with any) and are never stored in the database.

This module reads and encrypts; state changes that must converge instances live in
key_services.py. Plain values never leave it except through `effective_env()` (the instance's
environment) and `mask()`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.views.decorators.debug import sensitive_variables

from orchestrators.base import FinalError

from .models import Instance, Setting

ENV_VAR = "CLAWORC_ENCRYPTION_KEY"
# Environment variable names injected into every instance, with the label the admin shows.
# Adding a provider is one line here (docs/api-keys.md).
KEYS: dict[str, str] = {
    "ANTHROPIC_API_KEY": "Anthropic",
    "OPENAI_API_KEY": "OpenAI",
    "BRAVE_API_KEY": "Brave Search",
}
KEY_NAMES: tuple[str, ...] = tuple(KEYS)
GLOBAL_PREFIX = "api_key:"
UNREADABLE = "unreadable — re-enter"
_GENERATE_HINT = (
    "generate one with `python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'` (`make run` writes one to data/encryption.key)"
)


class UnreadableKey(FinalError):
    """A stored value that none of the CLAWORC_ENCRYPTION_KEY keys can decrypt.

    A FinalError: retrying cannot help, a person must re-enter the key or restore the old
    encryption key. The message says where the value is stored, never what it is.
    """


@lru_cache(maxsize=4)
def _multifernet(raw: str) -> MultiFernet:
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise ImproperlyConfigured(f"{ENV_VAR} is not set; {_GENERATE_HINT}")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except ValueError:
            # Never echo the value: it is a secret even when malformed.
            raise ImproperlyConfigured(
                f"{ENV_VAR} entry {position} of {len(keys)} is not a Fernet key "
                f"(32 url-safe base64-encoded bytes); {_GENERATE_HINT}"
            ) from None
    return MultiFernet(fernets)


def fernet() -> MultiFernet:
    """The configured MultiFernet; ImproperlyConfigured (naming the variable) when unusable."""
    return _multifernet(settings.CLAWORC_ENCRYPTION_KEY)


def check_encryption_key() -> None:
    """Raise ImproperlyConfigured now, at start-up, rather than inside the first request."""
    fernet()


@sensitive_variables()
def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


@sensitive_variables()
def decrypt(token: str, *, where: str = "a stored API key") -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise UnreadableKey(
            f"{where} cannot be decrypted with {ENV_VAR} (was the key changed?): "
            f"{UNREADABLE} it in the admin, or put the previous key after the new one"
        ) from None


def rotate_token(token: str) -> str:
    """The same plain value, encrypted with the newest key. InvalidToken when unreadable."""
    return fernet().rotate(token.encode()).decode()


MAX_KEY_LENGTH = 1000


@sensitive_variables()
def normalize_key(value: str) -> str:
    """The value as stored: surrounding whitespace (a pasted newline) removed.

    ValueError for what cannot be an API key; the message never repeats the value.
    """
    value = (value or "").strip()
    if len(value) > MAX_KEY_LENGTH:
        raise ValueError(f"An API key has at most {MAX_KEY_LENGTH} characters.")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("An API key cannot contain spaces, line breaks or control characters.")
    return value


#: Below this length the last 4 characters would be too much of the key: show none of it.
MASK_MIN_LENGTH = 12


@sensitive_variables()
def mask(value: str) -> str:
    """`****` + the last 4 characters: enough to recognise a key, never enough to use it."""
    if not value:
        return ""
    return "****" + value[-4:] if len(value) >= MASK_MIN_LENGTH else "****"


# --- Secrets inside clawdbot.json ---------------------------------------------------------------

_SECRET_KEY_RE = re.compile(
    r"(api[_-]?key|apikey|token|secret|passw(or)?d|credential|private[_-]?key|auth|cookie|"
    r"session)", re.IGNORECASE,
)
# Well-known token shapes, masked wherever they appear (Anthropic/OpenAI, Slack, GitHub, AWS).
_SECRET_VALUE_RE = re.compile(r"^(sk-|xox[abpr]-|gh[pousr]_|github_pat_|AKIA)[A-Za-z0-9_\-]{6,}")
MASK_PREFIX = "****"


def _secret_looking(value: str, key: str) -> bool:
    return bool(value) and bool(_SECRET_KEY_RE.search(key) or _SECRET_VALUE_RE.match(value))


def mask_secrets(value, key: str = ""):
    """A copy of a JSON value with every secret-looking string masked like the admin does."""
    try:
        return _mask_tree(value, key)
    except RecursionError:  # stored before depth was bounded: show nothing rather than fail
        return {"(hidden)": "the config is nested too deeply to display"}


def _mask_tree(value, key: str):
    if isinstance(value, dict):
        return {k: _mask_tree(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_tree(v, key) for v in value]
    if isinstance(value, str) and _secret_looking(value, key):
        return mask(value)
    return value


def unmask_secrets(submitted, stored, key: str = ""):
    """`submitted` with each masked value that is still as shown replaced by the stored secret.

    The admin shows clawdbot.json masked; saving the form unchanged must keep the secrets, and a
    value typed over a mask replaces it.
    """
    if isinstance(submitted, dict):
        stored = stored if isinstance(stored, dict) else {}
        return {k: unmask_secrets(v, stored.get(k), str(k)) for k, v in submitted.items()}
    if isinstance(submitted, list):
        stored = stored if isinstance(stored, list) else []
        return [unmask_secrets(v, stored[i] if i < len(stored) else None, key)
                for i, v in enumerate(submitted)]
    if (isinstance(submitted, str) and submitted.startswith(MASK_PREFIX)
            and isinstance(stored, str) and _secret_looking(stored, key)
            and mask(stored) == submitted):
        return stored
    return submitted


# --- Globals (Setting rows `api_key:<ENV_NAME>`) ------------------------------------------------

def _global_tokens() -> dict[str, str]:
    rows = Setting.objects.filter(key__startswith=GLOBAL_PREFIX).values_list("key", "value")
    return {
        key.removeprefix(GLOBAL_PREFIX): token
        for key, token in rows
        if key.removeprefix(GLOBAL_PREFIX) in KEYS and token
    }


@sensitive_variables()
def get_global_keys(*, strict: bool = False) -> dict[str, str]:
    """Global keys by env name. An unreadable one raises UnreadableKey when strict, else is
    left out."""
    keys = {}
    for name, token in _global_tokens().items():
        try:
            keys[name] = decrypt(token, where=f"The global {name}")
        except UnreadableKey:
            if strict:
                raise
    return keys


@sensitive_variables()
def get_global_key(name: str) -> str:
    """One global key ("" when unset). UnreadableKey when it cannot be decrypted."""
    token = _global_tokens().get(name, "")
    return decrypt(token, where=f"The global {name}") if token else ""


@sensitive_variables()
def set_global_key(name: str, value: str) -> None:
    """Store (or, with "", delete) one global key. No convergence: see key_services."""
    _check_names([name])
    if value:
        Setting.set(GLOBAL_PREFIX + name, encrypt(value))
    else:
        Setting.objects.filter(key=GLOBAL_PREFIX + name).delete()


# --- Per-instance overrides (Instance.encrypted_api_keys) ---------------------------------------

@sensitive_variables()
def get_overrides(instance: Instance) -> dict[str, str]:
    """The instance's overrides by env name. UnreadableKey when they cannot be decrypted."""
    if not instance.encrypted_api_keys:
        return {}
    plain = decrypt(instance.encrypted_api_keys, where=f"The API key overrides of {instance.name}")
    return {k: v for k, v in json.loads(plain).items() if k in KEYS and v}


@sensitive_variables()
def encode_overrides(overrides: dict[str, str]) -> str:
    """The value for Instance.encrypted_api_keys ("" when there is no override)."""
    _check_names(overrides)
    clean = {k: v for k, v in sorted(overrides.items()) if v}
    return encrypt(json.dumps(clean)) if clean else ""


def set_overrides(instance: Instance, overrides: dict[str, str]) -> None:
    """Store the overrides on the instance (the caller saves it). Empty values are dropped."""
    instance.encrypted_api_keys = encode_overrides(overrides)


@sensitive_variables()
def effective_env(instance: Instance) -> dict[str, str]:
    """Globals overlaid with the instance's overrides: the environment the agent gets.

    Raises UnreadableKey (a FinalError) instead of silently dropping a key: a container
    recreated without its key would look healthy and fail at its first LLM call.
    """
    overrides = get_overrides(instance)
    env = {}
    for name, token in _global_tokens().items():
        # A global the instance overrides is not used: unreadable or not, it cannot matter.
        if name not in overrides:
            env[name] = decrypt(token, where=f"The global {name}")
    env.update(overrides)
    return env


# --- What the admin shows -----------------------------------------------------------------------

@dataclass(frozen=True)
class KeyDisplay:
    """How one stored key is shown: never the value, only whether it is set and its mask."""

    is_set: bool = False
    masked: str = ""
    unreadable: bool = False

    def __str__(self) -> str:
        if self.unreadable:
            return UNREADABLE
        return self.masked if self.is_set else ""


@sensitive_variables()
def global_key_display() -> dict[str, KeyDisplay]:
    tokens = _global_tokens()
    shown = {}
    for name in KEY_NAMES:
        token = tokens.get(name)
        if not token:
            shown[name] = KeyDisplay()
            continue
        try:
            shown[name] = KeyDisplay(True, mask(decrypt(token)))
        except UnreadableKey:
            shown[name] = KeyDisplay(True, unreadable=True)
    return shown


@sensitive_variables()
def override_display(instance: Instance) -> dict[str, KeyDisplay]:
    try:
        overrides = get_overrides(instance)
    except UnreadableKey:
        return {name: KeyDisplay(True, unreadable=True) for name in KEY_NAMES}
    return {
        name: KeyDisplay(True, mask(overrides[name])) if name in overrides else KeyDisplay()
        for name in KEY_NAMES
    }


def _check_names(names: Iterable[str]) -> None:
    unknown = sorted(set(names) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown API key names: {', '.join(unknown)}; known: "
                         f"{', '.join(KEY_NAMES)}")


# --- Start-up checks ----------------------------------------------------------------------------

def check_stored_keys_readable(app_configs=None, databases=None, **kwargs):
    """System check (database): stored values the configured keys cannot decrypt.

    Every value unreadable means the encryption key is wrong: an Error, so `migrate` (the first
    step of every start) stops with the variable's name. Some unreadable is a Warning: the
    admin shows those as "unreadable — re-enter".
    """
    if not databases:
        return []
    try:
        fernet()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="claworc.E001")]
    from django.db import DatabaseError

    try:
        tokens = list(_global_tokens().values()) + list(
            Instance.objects.exclude(encrypted_api_keys="")
            .values_list("encrypted_api_keys", flat=True)
        )
    except DatabaseError:
        return []  # not migrated yet: nothing stored to check
    unreadable = 0
    for token in tokens:
        try:
            fernet().decrypt(token.encode())
        except InvalidToken:
            unreadable += 1
    if not unreadable:
        return []
    hint = (f"Put the previous key after the new one in {ENV_VAR} (comma-separated, newest "
            "first) and run `manage.py rotate_encryption_key`; if it is lost, run "
            "`manage.py rotate_encryption_key --forget-unreadable` and re-enter the keys.")
    if unreadable == len(tokens):
        return [checks.Error(
            f"{ENV_VAR} cannot decrypt any of the {len(tokens)} stored API key values: it is "
            "not the key they were encrypted with.", hint=hint, id="claworc.E002")]
    return [checks.Warning(
        f"{unreadable} of {len(tokens)} stored API key values cannot be decrypted with "
        f"{ENV_VAR}; the admin shows them as \"{UNREADABLE}\".", hint=hint, id="claworc.W001")]
