import copy
import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import F, Q
from django.db.models.functions import Mod
from django.db.models.lookups import Exact
from django.db.models.query_utils import DeferredAttribute
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.text import slugify

from .run_hours import schedule_errors, schedule_of
from .validators import (
    NAME_MAX_LENGTH,
    resource_errors,
    validate_config,
    validate_cpu,
    validate_image,
    validate_instance_name,
    validate_size,
)

NAME_PREFIX = "bot-"


def derive_name(display_name: str) -> str:
    """`My Bot` -> `bot-my-bot`: a DNS-1123 label that every resource name is built from."""
    # slugify keeps ASCII letters, digits, '-' and '_'; '_' is not allowed in a DNS label.
    slug = re.sub(r"[-_]+", "-", slugify(display_name)).strip("-")
    if not slug.startswith(NAME_PREFIX):
        slug = NAME_PREFIX + slug if slug else ""
    return slug[:NAME_MAX_LENGTH].strip("-").lower()


# Fields a workload is built from: changing one means converging.
CONVERGE_FIELDS = (
    "image", "cpu_request", "cpu_limit", "memory_request", "memory_limit",
    "storage_clawdbot", "storage_homebrew", "storage_clawd", "storage_chrome",
    "clawdbot_config", "encrypted_api_keys",
)


class _SnapshotOnFirstUse(DeferredAttribute):
    """A JSON field whose loaded value is copied for change detection only when code first
    reads or replaces it.

    Its value is the one mutable field a workload is built from (code may change it in place),
    so telling a change needs a copy of what was loaded; copying it for every loaded row cost
    lists of a thousand instances far more than the rows themselves, and lists never read it.
    Until the first read, nobody holds the loaded object, so it is still what was loaded.
    """

    def __get__(self, instance, cls=None):
        value = super().__get__(instance, cls)
        if instance is not None:
            pending = instance.__dict__.get("_spec_unread")
            if pending and self.field.attname in pending:
                pending.discard(self.field.attname)
                instance._saved_spec[self.field.attname] = copy.deepcopy(value)
        return value

    def __set__(self, instance, value):
        data = instance.__dict__
        pending = data.get("_spec_unread")
        if pending and self.field.attname in pending:
            # Never handed out, so never changed: the loaded object itself is the snapshot.
            pending.discard(self.field.attname)
            instance._saved_spec[self.field.attname] = data[self.field.attname]
        data[self.field.attname] = value


class _ConfigField(models.JSONField):
    descriptor_class = _SnapshotOnFirstUse

    def deconstruct(self):
        # Only how the value is read from a loaded row differs: the column is a plain JSONField.
        name, _, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs


_PLAIN_SPEC_FIELDS = tuple(f for f in CONVERGE_FIELDS if f != "clawdbot_config")


#: A Setting each reconcile_all writes: "<highest pk it read> <ISO time>". Every row up to that
#: pk was observed then, changed or not. Writing each unchanged row's own observed time at every
#: beat was most of the sweep's cost on PostgreSQL at 1,000 rows (a new row version each).
SWEPT_SETTING = "reconcile_all.swept"


def sweep_format(*, through_pk: int, at) -> str:
    return f"{through_pk} {at.isoformat()}"


class InstanceQuerySet(models.QuerySet):
    def with_sweep(self):
        """Annotate `swept` (the last sweep's record) for Instance.last_observed, in the same
        query rather than one more per page."""
        return self.annotate(swept=models.Subquery(
            Setting.objects.filter(key=SWEPT_SETTING).values("value")[:1]))

    def owing_work(self):
        """Rows whose workload a worker still has to change: an intent newer than what was
        converged, a one-shot request not carried out, a deletion not finished, or a status that
        is not the desired state (a transitional one, or drift) and not a recorded error."""
        S = Instance.Status
        return self.filter(
            Q(generation__gt=F("observed_generation"))
            | Q(restart_requested__gt=F("restart_done"))
            | Q(recreate_requested__gt=F("recreate_done"))
            | Q(status=S.DELETING)
            | (Q(desired_state=Instance.DesiredState.RUNNING)
               & ~Q(status__in=[S.RUNNING, S.ERROR]))
            | (Q(desired_state=Instance.DesiredState.STOPPED)
               & ~Q(status__in=[S.STOPPED, S.ERROR]))
        )

    def delete(self):
        """Deleting is an intent: the rows stay `deleting` until their workload is gone."""
        from . import services

        outcome = services.instance_delete(instance_ids=list(self.values_list("pk", flat=True)))
        return len(outcome.queued), {self.model._meta.label: len(outcome.queued)}

    delete.alters_data = True
    delete.queryset_only = True

    def purge(self):
        """Remove the rows for good (the worker, once their teardown is done)."""
        return super().delete()

    purge.alters_data = True
    purge.queryset_only = True


class Instance(models.Model):
    class DesiredState(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"

    class Status(models.TextChoices):
        CREATING = "creating", "Creating"
        # Waiting for its image to be pulled; a container it had keeps running meanwhile.
        PULLING = "pulling", "Pulling image"
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"
        RESTARTING = "restarting", "Restarting"
        RECREATING = "recreating", "Recreating"
        ERROR = "error", "Error"
        DELETING = "deleting", "Deleting"

    display_name = models.CharField(max_length=100)
    name = models.CharField(
        max_length=NAME_MAX_LENGTH,
        unique=True,
        blank=True,
        validators=[validate_instance_name],
        help_text="Lowercase letters, digits and '-'. Left empty, it is derived from the "
        "display name: 'My Bot' becomes 'bot-my-bot'. It names the container, volumes and "
        "config directory, so it cannot change later.",
    )
    image = models.CharField(
        max_length=255, blank=True, help_text="Left empty, CLAWORC_AGENT_IMAGE is used."
    )

    cpu_request = models.CharField(max_length=16, default="500m", validators=[validate_cpu])
    cpu_limit = models.CharField(max_length=16, default="2000m", validators=[validate_cpu])
    memory_request = models.CharField(max_length=16, default="1Gi", validators=[validate_size])
    memory_limit = models.CharField(max_length=16, default="4Gi", validators=[validate_size])
    storage_clawdbot = models.CharField(max_length=16, default="5Gi", validators=[validate_size])
    storage_homebrew = models.CharField(max_length=16, default="10Gi", validators=[validate_size])
    storage_clawd = models.CharField(max_length=16, default="5Gi", validators=[validate_size])
    storage_chrome = models.CharField(max_length=16, default="5Gi", validators=[validate_size])

    clawdbot_config = _ConfigField(
        default=dict, blank=True, validators=[validate_config],
        help_text="The instance's clawdbot.json, a JSON object.",
    )
    # Per-instance API key overrides: a Fernet token of a JSON object, never plain text.
    encrypted_api_keys = models.TextField(blank=True, default="", editable=False)

    desired_state = models.CharField(
        max_length=16, choices=DesiredState, default=DesiredState.RUNNING
    )
    # Intents are numbered (like Kubernetes' metadata.generation / status.observedGeneration):
    # every intent that changes what should run bumps `generation` in the transaction that records
    # it, and the worker records the generation it converged to. What is owed is a query on these
    # columns (Instance.objects.owing_work()), never a message in flight.
    generation = models.PositiveBigIntegerField(default=1, editable=False)
    observed_generation = models.PositiveBigIntegerField(default=0, editable=False)
    # One-shot requests count up, so two at once are both kept and a recreate is never turned
    # into a restart; the worker records how many it carried out.
    restart_requested = models.PositiveIntegerField(default=0, editable=False)
    restart_done = models.PositiveIntegerField(default=0, editable=False)
    recreate_requested = models.PositiveIntegerField(default=0, editable=False)
    recreate_done = models.PositiveIntegerField(default=0, editable=False)
    # When work became owed (cleared when the worker has caught up): /health's "oldest owed work".
    owed_since = models.DateTimeField(null=True, blank=True, default=timezone.now,
                                      editable=False)
    # When a converge was last handed to the broker and not yet started: reconcile_all does not
    # send it again meanwhile. Cleared by the worker that starts it, and when sending failed.
    enqueued_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Converges started and not finished in a row (their worker died): capped, then `error`.
    worker_losses = models.PositiveSmallIntegerField(default=0, editable=False)
    # The last converge was refused by the backend: the error stays until one succeeds.
    converge_failed = models.BooleanField(default=False, editable=False)
    # Bumped by every write through a service: a form opened at an older version is refused.
    version = models.PositiveIntegerField(default=1, editable=False)
    keep_volumes = models.BooleanField(
        "keep volumes when deleted", default=False,
        help_text="Deleting the instance keeps its four volumes (its data) when this is set.",
    )
    # Run hours (instances/run_hours.py, docs/schedules.md): all four set, or all empty for none.
    schedule_days = models.CharField(
        "run on", max_length=27, blank=True, default="",
        help_text="Days whose window the schedule opens. Empty, with the times and zone: no "
        "schedule (the instance runs as staff leave it).")
    schedule_start = models.TimeField("from", null=True, blank=True,
                                      help_text="Local time the window opens: the instance is "
                                      "started (HH:MM).")
    schedule_end = models.TimeField("until", null=True, blank=True,
                                    help_text="Local time it closes: the instance is stopped. "
                                    "Before the start: the next day (22:00-06:00).")
    schedule_timezone = models.CharField(
        "time zone", max_length=64, blank=True, default="",
        help_text="IANA name, e.g. Europe/Paris.")
    idle_stop = models.BooleanField(
        "stop when idle", default=True,
        help_text="Stopped when nobody uses its desktop and its CPU stays low for a while "
        "(CLAWORC_IDLE_AFTER, CLAWORC_IDLE_CPU_THRESHOLD). Clear to keep it running.")
    # The last edge of the schedule carried out (its instant) and the schedule it belonged to:
    # each edge is applied once, however late or often the beat runs (services/schedules.py).
    schedule_applied_at = models.DateTimeField(null=True, blank=True, editable=False)
    schedule_applied_key = models.CharField(max_length=120, blank=True, default="",
                                            editable=False)
    # What the schedule or idle stop last did to the row and why ("refused" keeps a refused
    # scheduled start waiting for room). Shown only while the row is still at auto_version:
    # any later action by a person makes it history (the Activity log keeps it).
    auto_kind = models.CharField(max_length=16, blank=True, default="", editable=False)
    auto_note = models.TextField(blank=True, default="", editable=False)
    auto_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    status = models.CharField(max_length=16, choices=Status, default=Status.CREATING)
    # The repository digest of the image the workload was last created from ("" when unknown,
    # e.g. a locally built image): what "update available" compares with.
    running_digest = models.CharField(max_length=100, blank=True, default="", editable=False)
    status_message = models.TextField(blank=True, default="")
    status_observed_at = models.DateTimeField(null=True, blank=True)
    # When `status` last changed value: what the "creating" timeout is measured from.
    status_since = models.DateTimeField(default=timezone.now, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = InstanceQuerySet.as_manager()

    #: Written only by services (intents and the worker), with UPDATEs: a plain save() of a row
    #: loaded earlier never writes them back, so it cannot undo a Stop or lose a generation.
    CONTROL_FIELDS = frozenset({
        "desired_state", "generation", "observed_generation", "restart_requested",
        "restart_done", "recreate_requested", "recreate_done", "owed_since", "enqueued_at",
        "worker_losses", "converge_failed", "version", "status", "status_message",
        "status_observed_at", "status_since", "schedule_applied_at", "schedule_applied_key",
        "auto_kind", "auto_note", "auto_version",
    })

    #: Statuses set the moment an action is accepted, until the worker reports what it saw.
    TRANSITIONAL = frozenset({Status.CREATING, Status.STARTING, Status.STOPPING,
                              Status.RESTARTING, Status.RECREATING, Status.DELETING})

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name or self.display_name

    def save(self, *args, **kwargs):
        # Derive here too so Instance.objects.create(display_name=...) works from code.
        if not self.name:
            self.name = derive_name(self.display_name)
        validate_instance_name(self.name)
        saved_name = getattr(self, "_saved_name", None)
        if self.pk and saved_name and self.name != saved_name:
            # Container, volumes, config directory and ports are all named after it.
            raise ValidationError({"name": f"The name of an instance cannot change "
                                           f"(it is {saved_name})."})
        if self.pk and not self._state.adding and not args and kwargs.get(
                "update_fields") is None and not kwargs.get("force_insert"):
            saved_state = getattr(self, "_saved_desired_state", self.desired_state)
            if self.desired_state != saved_state:
                raise ValidationError({"desired_state": "Use Start or Stop (the admin actions, "
                                       "or services.instance_start / instance_stop)."})
            kwargs["update_fields"] = [
                f.name for f in self._meta.concrete_fields
                if not f.primary_key and f.name not in self.CONTROL_FIELDS]
        # post_save admits the instance to the capacity budget and may refuse it: the insert
        # or the resize must then be undone with it, from code that did not open a transaction.
        with transaction.atomic():
            super().save(*args, **kwargs)
        self._saved_name = self.name

    def delete(self, using=None, keep_parents=False):
        """Deleting is an intent: the row stays `deleting` (name and ports reserved) until the
        worker has removed its workload; only then is it gone."""
        from . import services

        outcome = services.instance_delete(instance_ids=[self.pk], keep_volumes=self.keep_volumes)
        self.status = self.Status.DELETING
        return len(outcome.queued), {self._meta.label: len(outcome.queued)}

    def validate_unique(self, exclude=None):
        if self.name and (exclude is None or "name" not in exclude):
            deleting = Instance.objects.filter(name=self.name, status=self.Status.DELETING)
            if self.pk:
                deleting = deleting.exclude(pk=self.pk)
            if deleting.exists():
                raise ValidationError({"name": f"{self.name} is being deleted: its container "
                                       "and volumes are being removed. Add it again once it is "
                                       "gone from the list."})
        super().validate_unique(exclude=exclude)

    def clean(self):
        super().clean()
        if not self.name:
            self.name = derive_name(self.display_name)
            if not self.name:
                raise ValidationError(
                    {"display_name": "No ASCII letters or digits to derive a name from; "
                     "enter a name."}
                )
            try:
                validate_instance_name(self.name)
            except ValidationError as exc:
                raise ValidationError({"display_name": exc.messages}) from None
        errors: dict[str, list[str]] = {}
        try:
            validate_image(self.image)
        except ValidationError as exc:
            errors["image"] = exc.messages
        from orchestrators.registry import host_cpus

        for field, message in resource_errors(
            cpu_request=self.cpu_request, cpu_limit=self.cpu_limit,
            memory_request=self.memory_request, memory_limit=self.memory_limit,
            host_cpus=host_cpus(),
        ).items():
            errors.setdefault(field, []).append(message)
        # The four schedule fields are checked together here (not by field validators, which
        # would say the same twice).
        for field, message in schedule_errors(
            days=self.schedule_days, start=self.schedule_start, end=self.schedule_end,
            zone=self.schedule_timezone,
        ).items():
            errors.setdefault(field, []).append(message)
        if errors:
            raise ValidationError(errors)

    def clean_fields(self, exclude=None):
        # The config is checked first, by an iterative walk: JSONField's own check serialises
        # it recursively (a deep one fails with RecursionError), and its validators skip the
        # "empty" values null and [].
        exclude = set(exclude or ())
        errors: dict[str, list[str]] = {}
        if "clawdbot_config" not in exclude:
            try:
                validate_config(self.clawdbot_config)
            except ValidationError as exc:
                errors["clawdbot_config"] = exc.messages
            exclude.add("clawdbot_config")
        try:
            super().clean_fields(exclude=exclude)
        except ValidationError as exc:
            errors.update(exc.message_dict)
        if errors:
            raise ValidationError(errors)

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._saved_name = instance.__dict__.get("name")
        instance._saved_desired_state = instance.__dict__.get("desired_state")
        data = instance.__dict__
        # The strings are immutable: kept as they are. The config is copied on first use.
        instance._saved_spec = {f: data[f] for f in _PLAIN_SPEC_FIELDS if f in data}
        instance._spec_unread = {"clawdbot_config"} if "clawdbot_config" in data else set()
        return instance

    def remember_saved_spec(self, fields=CONVERGE_FIELDS) -> None:
        """Note what the workload was last saved with, to tell later which of it changed."""
        saved = getattr(self, "_saved_spec", None) or {}
        data = self.__dict__
        unread = data.get("_spec_unread")
        for f in fields:
            if f in data:
                # A deep copy of the config: code may change it in place, also later through a
                # reference it holds now.
                saved[f] = copy.deepcopy(data[f]) if f == "clawdbot_config" else data[f]
                if unread:
                    unread.discard(f)
        self._saved_spec = saved

    def changed_spec_fields(self) -> list[str]:
        """CONVERGE_FIELDS whose value differs from when the row was loaded or last saved."""
        saved = getattr(self, "_saved_spec", None)
        if saved is None:
            return []
        return [f for f, value in saved.items() if self.__dict__.get(f, value) != value]

    @property
    def schedule(self):
        """The run hours as a run_hours.Schedule, None when there are none."""
        return schedule_of(days=self.schedule_days, start=self.schedule_start,
                           end=self.schedule_end, zone=self.schedule_timezone)

    @property
    def auto_reason(self) -> str:
        """Why the schedule or idle stop left it as it is, while no person has acted since."""
        if self.auto_note and self.auto_version == self.version:
            return self.auto_note
        return ""

    @property
    def last_observed(self):
        """When the backend last saw this instance: its own write (a converge, a status change)
        or the last sweep that read it, whichever is later. Needs `with_sweep()`'s annotation;
        without it, the row's own time."""
        own = self.status_observed_at
        through, _, at = (getattr(self, "swept", None) or "").partition(" ")
        swept = parse_datetime(at) if through.isdigit() and self.pk <= int(through) else None
        if swept is None or (own is not None and own >= swept):
            return own
        return swept

    @property
    def effective_image(self) -> str:
        return self.image or settings.CLAWORC_AGENT_IMAGE

    def vnc_url(self, port: int) -> str:
        return f"http://{settings.CLAWORC_NODE_IP}:{port}/vnc.html?autoconnect=true"


class PortAllocation(models.Model):
    """A Chrome/Terminal VNC port pair. The unique columns make a double allocation impossible."""

    instance = models.OneToOneField(Instance, on_delete=models.CASCADE, related_name="ports")
    port_chrome = models.PositiveIntegerField(unique=True)
    port_terminal = models.PositiveIntegerField(unique=True)

    class Meta:
        ordering = ["port_chrome"]
        constraints = [
            models.CheckConstraint(
                condition=Exact(Mod(F("port_chrome"), 2), 0), name="port_chrome_even"
            ),
            models.CheckConstraint(
                condition=Q(port_terminal=F("port_chrome") + 1), name="port_terminal_follows"
            ),
        ]

    def __str__(self):
        return f"{self.port_chrome}/{self.port_terminal}"

    @property
    def chrome_vnc_url(self) -> str:
        return self.instance.vnc_url(self.port_chrome)

    @property
    def terminal_vnc_url(self) -> str:
        return self.instance.vnc_url(self.port_terminal)


class Setting(models.Model):
    """Key/value store (the spec's "settings table"): orchestrator_backend, global API keys."""

    key = models.CharField(max_length=100, unique=True)
    value = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self):
        return self.key

    @classmethod
    def get_str(cls, key: str, default: str = "") -> str:
        value = cls.objects.filter(key=key).values_list("value", flat=True).first()
        return default if value is None else value

    @classmethod
    def get_bool(cls, key: str, default: bool = False) -> bool:
        value = cls.get_str(key, "")
        if value == "":
            return default
        return value.strip().lower() in {"1", "true", "yes", "on"}

    @classmethod
    def get_int(cls, key: str, default: int = 0) -> int:
        value = cls.get_str(key, "")
        try:
            return int(value)
        except ValueError:
            return default

    @classmethod
    def set(cls, key: str, value) -> None:
        if isinstance(value, bool):
            value = "true" if value else "false"
        # One UPDATE for a key that exists (the beat writes a few at each run); update_or_create
        # (a savepoint, a locked read and an insert) only the first time.
        if not cls.objects.filter(key=key).update(value=str(value), updated_at=timezone.now()):
            cls.objects.update_or_create(key=key, defaults={"value": str(value)})


class Activity(models.Model):
    """What was done to an instance, by whom, when, with what result."""

    class Result(models.TextChoices):
        QUEUED = "queued", "Queued"
        # Recorded, but no broker could be reached: reconcile_all (or the worker once the broker
        # is back) carries it out.
        PENDING = "pending", "Pending"
        OK = "ok", "OK"
        ERROR = "error", "Error"
        INFO = "info", "Info"

    # No database constraint: the audit trail must be writable even for a row deleted by a
    # teardown meanwhile (the teardown unlinks what it can see; a late record keeps the name).
    instance = models.ForeignKey(
        Instance, null=True, blank=True, on_delete=models.SET_NULL, related_name="activities",
        db_constraint=False,
    )
    instance_name = models.CharField(max_length=NAME_MAX_LENGTH, db_index=True)
    action = models.CharField(max_length=50)
    actor = models.CharField(max_length=150, default="system")
    result = models.CharField(max_length=16, choices=Result, default=Result.INFO)
    message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "activities"

    def __str__(self):
        return f"{self.instance_name}: {self.action} ({self.result})"


class InstanceLease(models.Model):
    """Who is acting on the instance called `name` now; keyed by name so teardown (after the row
    is gone) and a reconcile of the same name exclude each other.

    Taken with one atomic INSERT or UPDATE ... WHERE expired, in autocommit, so the lock works
    across processes on SQLite and PostgreSQL without a transaction held open during Docker calls.
    A killed worker's lease simply expires.
    """

    name = models.CharField(max_length=64, unique=True)
    owner = models.CharField(max_length=200)
    expires_at = models.DateTimeField()

    def __str__(self):
        return f"{self.name} held by {self.owner} until {self.expires_at:%H:%M:%S}"


class OrphanWorkload(models.Model):
    """A workload labelled managed-by=claworc that has no Instance row: reported, never deleted."""

    name = models.CharField(max_length=255, unique=True)
    backend = models.CharField(max_length=32)
    status = models.CharField(max_length=16)
    message = models.TextField(blank=True, default="")
    first_seen = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


def format_bytes(value: int) -> str:
    """1234567 -> "1.2 MB" (decimal units, as Docker prints pull sizes)."""
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover - the loop returns


class ImagePull(models.Model):
    """The latest pull of one image onto the host, with its progress: one row per image.

    A row that is queued or pulling with a fresh heartbeat is the pull everybody waits for;
    nobody starts another (instances/image_services.py).
    """

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        PULLING = "pulling", "Pulling"
        DONE = "done", "Done"
        ERROR = "error", "Error"

    image = models.CharField(max_length=255, unique=True)
    state = models.CharField(max_length=16, choices=State, default=State.QUEUED)
    bytes_done = models.BigIntegerField(default=0)
    bytes_total = models.BigIntegerField(default=0)
    layers_done = models.PositiveIntegerField(default=0)
    layers_total = models.PositiveIntegerField(default=0)
    phase = models.CharField(max_length=64, blank=True, default="")
    digest = models.CharField(max_length=100, blank=True, default="")
    # Why it failed, for code (orchestrators.base.PullError.cause); the message says it for people.
    cause = models.CharField(max_length=16, blank=True, default="")
    message = models.TextField(blank=True, default="")
    requested_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    # Written with the progress: a pull whose heartbeat is old died with its worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self):
        return f"{self.image} ({self.state})"

    @property
    def percent(self) -> int | None:
        if not self.bytes_total:
            return None
        return min(100, int(100 * self.bytes_done / self.bytes_total))

    def progress_text(self) -> str:
        """ "30% (12.0 MB of 40.0 MB, 2 of 5 layers)": the percent first, so it survives the
        truncation of a list column."""
        if not self.layers_total:
            return "starting" if self.state == self.State.PULLING else str(self.get_state_display())
        layers = f"{self.layers_done} of {self.layers_total} layers"
        if not self.bytes_total:
            return f"sizes not known yet ({layers})"
        return (f"{self.percent}% ({format_bytes(self.bytes_done)} of "
                f"{format_bytes(self.bytes_total)}, {layers})")


class InstanceUsage(models.Model):
    """The last resource-usage sample of an instance, written by the worker (sample_usage).

    Web pages and /metrics read it; nothing in a request asks the backend for usage.
    """

    instance = models.OneToOneField(
        Instance, primary_key=True, on_delete=models.CASCADE, related_name="usage"
    )
    sampled_at = models.DateTimeField(null=True, blank=True)
    #: Cores in use (1.0 = one full core), averaged since the previous sample.
    cpu_cores = models.FloatField(null=True, blank=True, db_index=True)
    #: The backend's cumulative CPU time, kept to make a rate of the next sample (Docker).
    cpu_seconds_total = models.FloatField(null=True, blank=True)
    memory_bytes = models.BigIntegerField(null=True, blank=True, db_index=True)
    memory_limit_bytes = models.BigIntegerField(null=True, blank=True)
    #: Bytes used by the instance's volumes together, and per volume name.
    volume_bytes = models.BigIntegerField(null=True, blank=True)
    volumes = models.JSONField(default=dict, blank=True)
    volumes_sampled_at = models.DateTimeField(null=True, blank=True)
    #: Why there is no number ("not available: ..."), for people.
    message = models.CharField(max_length=300, blank=True, default="")
    #: Since when every sample has been below CLAWORC_IDLE_CPU_THRESHOLD (None: the last one was
    #: not, had no number, or the instance is not running): what idle stop measures from.
    idle_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "instance usage"

    def __str__(self):
        return f"usage of {self.instance_id}"


class Rollout(models.Model):
    """A fleet image update: resolve the tag to a digest, pull once, recreate in batches.

    The worker advances it a step at a time (instances/services/rollouts.py); it stops at the
    first instance that fails and says which.
    """

    class State(models.TextChoices):
        RESOLVING = "resolving", "Resolving the tag"
        PULLING = "pulling", "Pulling"
        UPDATING = "updating", "Updating instances"
        DONE = "done", "Done"
        FAILED = "failed", "Stopped at a failure"

    ACTIVE = (State.RESOLVING, State.PULLING, State.UPDATING)

    image = models.CharField(max_length=255)
    digest = models.CharField(max_length=100, blank=True, default="")
    batch_size = models.PositiveIntegerField(default=2)
    state = models.CharField(max_length=16, choices=State, default=State.RESOLVING)
    message = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True)
    batch_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"update of {self.image} #{self.pk}"


class RolloutStep(models.Model):
    """One instance of a rollout, in batch `batch` (0-based)."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        UPDATING = "updating", "Updating"
        DONE = "done", "Updated"
        CURRENT = "current", "Already on the digest"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Not updated (rollout stopped)"

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="steps")
    instance = models.ForeignKey(Instance, null=True, on_delete=models.SET_NULL,
                                 related_name="rollout_steps")
    instance_name = models.CharField(max_length=NAME_MAX_LENGTH)
    batch = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=State, default=State.PENDING)
    message = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["batch", "instance_name"]

    def __str__(self):
        return f"{self.instance_name} ({self.state})"


class WorkerHeartbeat(models.Model):
    """A Celery worker's sign of life: written by its main process every few seconds, and by
    its pool processes when they finish a task. A worker that beats but finishes nothing while
    work is owed is wedged (/health says so)."""

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.PositiveIntegerField(default=0)
    seen_at = models.DateTimeField()
    last_task_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["hostname"]

    def __str__(self):
        return self.hostname
