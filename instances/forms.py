"""Admin forms for API keys: write-only inputs that show stored keys only masked.

Each key gets a password input that never renders a value (empty keeps the stored key) and a
checkbox that removes it. The stored state appears in the help text as `****` + the last 4
characters, or "unreadable — re-enter" when the encryption key cannot decrypt it.
"""

from __future__ import annotations

from django import forms
from django.views.decorators.debug import sensitive_variables

from . import key_services, keys, run_hours
from .models import Instance, derive_name
from .validators import parse_config_text


class ConfigField(forms.JSONField):
    """clawdbot.json as text: strict JSON (no NaN/Infinity), bounded before it is parsed, and
    an empty input meaning `{}`. Whatever is typed gives a form error, never a server error."""

    def to_python(self, value):
        if self.disabled:
            return value
        if value in self.empty_values:
            return {}
        if isinstance(value, str):
            return parse_config_text(value)
        return value

    def bound_data(self, data, initial):
        if self.disabled:
            return initial
        if data is None:
            return None
        try:
            return parse_config_text(data)
        except forms.ValidationError:
            return forms.fields.InvalidJSONInput(data)

class DaysWidget(forms.CheckboxSelectMultiple):
    """Checkboxes for the days stored as "mon,tue,fri"."""

    def format_value(self, value):
        if isinstance(value, str):
            value = [part for part in value.split(",") if part]
        return super().format_value(value)


class DaysField(forms.MultipleChoiceField):
    """The schedule's days: checkboxes in, "mon,tue,fri" (Monday first) out."""

    widget = DaysWidget

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(choices=list(zip(run_hours.DAYS, run_hours.DAY_LABELS, strict=True)),
                         **kwargs)

    def clean(self, value):
        return run_hours.format_days(super().clean(value))

    def has_changed(self, initial, data):
        initial = initial.split(",") if isinstance(initial, str) else initial
        return super().has_changed([d for d in initial or [] if d], data)


RESTART_HELP = (
    "Keys are write-only: leave an input empty to keep the stored key. Saving a changed key "
    "restarts the instance briefly: its container is recreated with the new environment, its "
    "volumes are kept."
)


def sensitive_fields() -> list[str]:
    """The key inputs' names: error reports (mail_admins, the debug page) hide their values."""
    return [key_field(name) for name in keys.KEY_NAMES]


def key_field(name: str) -> str:
    return f"key_{name.lower()}"


def clear_field(name: str) -> str:
    return f"clear_{name.lower()}"


def _declared_key_fields(clear_label: str) -> dict[str, forms.Field]:
    fields: dict[str, forms.Field] = {}
    for name, label in keys.KEYS.items():
        fields[key_field(name)] = forms.CharField(
            label=f"{label} ({name})",
            required=False,
            strip=True,
            # render_value=False: a submitted key is never echoed back, not even after an error.
            widget=forms.PasswordInput(
                render_value=False, attrs={"autocomplete": "new-password", "size": 60}),
        )
        fields[clear_field(name)] = forms.BooleanField(label=clear_label, required=False)
    return fields


class _ApiKeyFieldsMixin:
    """Validation and access shared by the override and global forms."""

    def _describe_state(self) -> None:
        raise NotImplementedError

    @sensitive_variables()
    def clean(self):
        cleaned = super().clean()
        for name in keys.KEY_NAMES:
            value = cleaned.get(key_field(name)) or ""
            try:
                cleaned[key_field(name)] = keys.normalize_key(value)
            except ValueError as exc:
                self.add_error(key_field(name), str(exc))
                continue
            if cleaned[key_field(name)] and cleaned.get(clear_field(name)):
                self.add_error(clear_field(name),
                               "Either enter a new key or clear it, not both.")
        return cleaned

    @sensitive_variables()
    def key_values(self) -> dict[str, str]:
        return {name: self.cleaned_data.get(key_field(name)) or "" for name in keys.KEY_NAMES}

    def key_clears(self) -> list[str]:
        return [name for name in keys.KEY_NAMES if self.cleaned_data.get(clear_field(name))]


class InstanceAdminFormBase(_ApiKeyFieldsMixin, forms.ModelForm):
    class Meta:
        model = Instance
        # The admin passes its own field list; this one serves the form on its own.
        fields = [
            "display_name", "name", "image", "cpu_request", "cpu_limit", "memory_request",
            "memory_limit", "storage_clawdbot", "storage_homebrew", "storage_clawd",
            "storage_chrome", "clawdbot_config", "desired_state", "schedule_days",
            "schedule_start", "schedule_end", "schedule_timezone", "idle_stop",
        ]

    schedule_days = DaysField(
        label="Run on",
        help_text="Days whose window opens (the window may end the next morning). Leave the "
        "days, times and zone empty for no schedule.")

    clawdbot_config = ConfigField(
        label="Clawdbot config", required=False, initial=dict,
        widget=forms.Textarea(attrs={"rows": 12, "cols": 80, "class": "vLargeTextField"}),
        help_text="The instance's clawdbot.json, a JSON object. Secret-looking values are shown "
        "masked (****abcd): leave a mask as it is to keep the stored value.",
    )

    #: The row's version when the form was opened (see clean()).
    expected_version = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "expected_version" in self.fields and self.instance.pk:
            self.fields["expected_version"].initial = self.instance.version
        if self.instance.pk and "clawdbot_config" in self.fields:
            # Secrets in the config are shown as on the status page: masked, never in clear.
            self.initial["clawdbot_config"] = keys.mask_secrets(
                self.instance.clawdbot_config or {})
        globals_ = keys.global_key_display()
        overrides = (keys.override_display(self.instance) if self.instance.pk
                     else {name: keys.KeyDisplay() for name in keys.KEY_NAMES})
        for name in keys.KEY_NAMES:
            if key_field(name) not in self.fields:
                continue
            own, fallback = overrides[name], globals_[name]
            if own.unreadable:
                state = f"Override: {keys.UNREADABLE}."
            elif own.is_set:
                state = f"Override: {own.masked}."
            elif fallback.unreadable:
                state = f"No override; the global key is {keys.UNREADABLE}."
            elif fallback.is_set:
                state = f"No override: uses the global key {fallback.masked}."
            else:
                state = "No override and no global key: not set."
            self.fields[key_field(name)].help_text = state
            self.fields[key_field(name)].widget.attrs["placeholder"] = (
                str(own) or "empty: use the global key")
            if clear_field(name) in self.fields and not own.is_set:
                self.fields[clear_field(name)].disabled = True

    def clean_clawdbot_config(self):
        value = self.cleaned_data.get("clawdbot_config")
        if self.instance.pk:
            value = keys.unmask_secrets(value, self.instance.clawdbot_config)
        return value

    def clean(self):
        cleaned = super().clean()
        expected = cleaned.get("expected_version")
        if self.instance.pk and expected is not None:
            from .services import StaleWrite, stale_check

            # Someone pressed Stop, or saved this form, since it was opened: refuse, apply
            # nothing (the row stays locked until the admin's transaction ends).
            try:
                stale_check(pk=self.instance.pk, expected_version=expected)
            except StaleWrite as exc:
                raise forms.ValidationError(exc.messages) from None
        self._check_capacity(cleaned)
        return cleaned

    def _check_capacity(self, cleaned: dict) -> None:
        """A new instance meant to run, or a resize of one, must fit the capacity budget: the
        refusal, with the numbers, is shown on the field that asks for too much. The budget
        stays locked until the admin's transaction ends, so the save cannot race past it."""
        from .services import capacity

        if self.instance.pk and not capacity.RESIZE_FIELDS.intersection(self.changed_data):
            return
        values = {f: cleaned.get(f, getattr(self.instance, f)) for f in capacity.RESIZE_FIELDS}
        if any(f in self.errors or values[f] is None for f in values):
            return  # the quantity itself is refused already
        errors = capacity.fit_errors(
            name=self.instance.name or cleaned.get("name") or derive_name(
                cleaned.get("display_name") or ""),
            pk=self.instance.pk,
            desired_state=cleaned.get("desired_state") or self.instance.desired_state,
            **values)
        for field, message in errors.items():
            self.add_error(field, message)

    def save_api_keys(self, *, actor: str, reconcile: bool = True) -> list[str]:
        """Apply the entered overrides (after the instance is saved); the changed names."""
        return key_services.api_keys_set_overrides(
            instance=self.instance, values=self.key_values(), clear=self.key_clears(),
            actor=actor, reconcile=reconcile)


InstanceAdminForm = type(
    "InstanceAdminForm", (InstanceAdminFormBase,), {
        "__module__": __name__,
        "__doc__": "The Instance change form with write-only API key overrides.",
        **_declared_key_fields("Clear override (use the global key)"),
    },
)

API_KEYS_FIELDSET = (
    "API keys",
    {
        "fields": [(key_field(name), clear_field(name)) for name in keys.KEY_NAMES],
        "description": "An override replaces the global key for this instance only; an empty "
        "override uses the global key. " + RESTART_HELP,
    },
)


class GlobalApiKeysFormBase(_ApiKeyFieldsMixin, forms.Form):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        shown = keys.global_key_display()
        for name in keys.KEY_NAMES:
            current = shown[name]
            self.fields[key_field(name)].help_text = (
                f"Stored: {current}." if current.is_set else "Not set.")
            self.fields[key_field(name)].widget.attrs["placeholder"] = str(current) or "not set"
            if not current.is_set:
                self.fields[clear_field(name)].disabled = True

    def save(self, *, actor: str) -> list[str]:
        """Store the entered keys and converge the instances using them; the changed names."""
        return key_services.api_keys_update_global(
            values=self.key_values(), clear=self.key_clears(), actor=actor)


GlobalApiKeysForm = type(
    "GlobalApiKeysForm", (GlobalApiKeysFormBase,), {
        "__module__": __name__,
        "__doc__": "The global API keys, used by every instance without an override.",
        **_declared_key_fields("Remove"),
    },
)
