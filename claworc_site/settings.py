"""Django settings for Claworc, read from the environment only (see .env.example)."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from .config import (
    DESKTOP_ACCESS_MODES,
    data_file,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_json_list,
    env_labels,
    env_list,
    env_overcommit,
    node_port_range,
    port_range,
    site_id,
)

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env file is a convenience for local runs; real deployments set the environment.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DATA_DIR = Path(env.str("CLAWORC_DATA_DIR", default=str(BASE_DIR / "data")))

DEBUG = env_bool(env, "DEBUG", False)
# `make run` generates the two secrets into the data directory; reading them from there too lets
# `manage.py <command>` work from a plain shell in the checkout. The environment wins.
SECRET_KEY = env.str("SECRET_KEY", default="") or data_file(DATA_DIR, "secret.key")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            f"SECRET_KEY is required when DEBUG is off; set it in the environment, or run "
            f"`make run` once, which generates {DATA_DIR / 'secret.key'}"
        )
    SECRET_KEY = "claworc-insecure-development-key-only-for-debug"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "instances.apps.InstancesConfig",
    "desktops.apps.DesktopsConfig",
    "orchestrators.apps.OrchestratorsConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "claworc_site.urls"
WSGI_APPLICATION = "claworc_site.wsgi.application"
ASGI_APPLICATION = "claworc_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'claworc.sqlite3'}"),
}
# Keep a connection for this many seconds instead of one per request (about 10 ms each on
# PostgreSQL); checked before reuse, so one the server dropped is replaced, not an error.
DATABASES["default"]["CONN_MAX_AGE"] = env_int(env, "DATABASE_CONN_MAX_AGE", 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front, so concurrent writers (web, workers)
    # wait for each other instead of failing with "database is locked" half-way through.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 30,
         "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "admin:login"

# --- Claworc (names and defaults from the Docker backend spec) ---------------------------------
CLAWORC_NODE_IP = env.str("CLAWORC_NODE_IP", default="192.168.1.104")
CLAWORC_DOCKER_CONFIG_DIR = env.str("CLAWORC_DOCKER_CONFIG_DIR", default="/app/data/configs")
CLAWORC_DOCKER_HOST = env.str("CLAWORC_DOCKER_HOST", default="") or None
# Where the Docker daemon sees CLAWORC_DOCKER_CONFIG_DIR. Unset: the same path, or, when the
# dashboard runs in a container, derived from its mounts (orchestrators/docker_host.py).
CLAWORC_DOCKER_HOST_CONFIG_DIR = env.str("CLAWORC_DOCKER_HOST_CONFIG_DIR", default="")
CLAWORC_PORT_START, CLAWORC_PORT_END = port_range(env)
CLAWORC_AGENT_IMAGE = env.str("CLAWORC_AGENT_IMAGE", default="glukw/openclaw-vnc-chrome:latest")
CLAWORC_DOCKER_PRIVILEGED = env_bool(env, "CLAWORC_DOCKER_PRIVILEGED", True)
# Run an init process as PID 1 in agent containers (the real agent runs systemd as PID 1).
CLAWORC_DOCKER_INIT = env_bool(env, "CLAWORC_DOCKER_INIT", False)
CLAWORC_K8S_NAMESPACE = env.str("CLAWORC_K8S_NAMESPACE", default="claworc")
CLAWORC_K8S_PRIVILEGED = env_bool(env, "CLAWORC_K8S_PRIVILEGED", True)
# What real clusters need (docs/kubernetes-backend.md): empty = the cluster's defaults.
CLAWORC_K8S_STORAGE_CLASS = env.str("CLAWORC_K8S_STORAGE_CLASS", default="")
CLAWORC_K8S_IMAGE_PULL_SECRETS = env_list(env, "CLAWORC_K8S_IMAGE_PULL_SECRETS")
CLAWORC_K8S_NODE_SELECTOR = env_labels(env, "CLAWORC_K8S_NODE_SELECTOR")
CLAWORC_K8S_TOLERATIONS = env_json_list(env, "CLAWORC_K8S_TOLERATIONS")
CLAWORC_K8S_NODE_PORT_RANGE = node_port_range(env)
# Copy the image's files into each new, empty PVC (as Docker does for named volumes).
CLAWORC_K8S_SEED_VOLUMES = env_bool(env, "CLAWORC_K8S_SEED_VOLUMES", True)
# This installation's identity, a label on every workload it makes: two sites sharing a Docker
# daemon or a Kubernetes namespace never see, adopt or delete each other's. Unset: generated once
# into the data directory.
CLAWORC_SITE_ID = site_id(env, DATA_DIR)
# Fernet keys for API keys at rest, comma-separated, newest first (MultiFernet rotation).
CLAWORC_ENCRYPTION_KEY = env.str("CLAWORC_ENCRYPTION_KEY", default="") or data_file(
    DATA_DIR, "encryption.key")
# Minimums: zero or a negative value would make every lease born expired (two workers holding
# the same one), every "creating" instance time out at once, or beat spin.
CLAWORC_RECONCILE_INTERVAL = env_int(env, "CLAWORC_RECONCILE_INTERVAL", 30, minimum=1)
CLAWORC_CREATING_TIMEOUT = env_int(env, "CLAWORC_CREATING_TIMEOUT", 600, minimum=10)
# Hard time limit (seconds) of one orchestration task; a per-instance lease lasts 10 s longer.
CLAWORC_TASK_TIME_LIMIT = env_int(env, "CLAWORC_TASK_TIME_LIMIT", 300, minimum=5)
# Days the Activity log and orphan records are kept (a housekeeping task deletes older ones).
CLAWORC_RETENTION_DAYS = env_int(env, "CLAWORC_RETENTION_DAYS", 90, minimum=1)
# Converges of one instance whose worker died mid-way (OOM-killed), in a row, before its
# status becomes `error` instead of another try.
CLAWORC_MAX_WORKER_LOSSES = env_int(env, "CLAWORC_MAX_WORKER_LOSSES", 3, minimum=1)
# Time limit (seconds) of one image pull: pulls are their own tasks, not bound by the one above.
CLAWORC_PULL_TIMEOUT = env_int(env, "CLAWORC_PULL_TIMEOUT", 3600, minimum=10)
# Instances recreated at a time by "Update image" (the default of its confirmation form).
CLAWORC_ROLLOUT_BATCH_SIZE = env_int(env, "CLAWORC_ROLLOUT_BATCH_SIZE", 2, minimum=1)

# The capacity budget (docs/capacity.md): a start, create or resize is refused when the sum of
# CPU requests would exceed the host's CPUs × CLAWORC_CPU_OVERCOMMIT, or the sum of memory
# limits its memory × CLAWORC_MEMORY_OVERCOMMIT. A Kubernetes ResourceQuota is never stretched.
CLAWORC_CPU_OVERCOMMIT = env_overcommit(env, "CLAWORC_CPU_OVERCOMMIT")
CLAWORC_MEMORY_OVERCOMMIT = env_overcommit(env, "CLAWORC_MEMORY_OVERCOMMIT")

# --- Operator pages, usage, /metrics ----------------------------------------------------------
# Seconds between two polls of the live status endpoint by an open page.
CLAWORC_LIVE_INTERVAL = env_int(env, "CLAWORC_LIVE_INTERVAL", 2, minimum=1)
# Seconds between two resource-usage samples (Celery beat), and the daemon/API calls one sample
# may make; volume sizes (one more call) are read at most every CLAWORC_USAGE_VOLUME_INTERVAL s.
CLAWORC_USAGE_INTERVAL = env_int(env, "CLAWORC_USAGE_INTERVAL", 30, minimum=1)
CLAWORC_USAGE_MAX_CALLS = env_int(env, "CLAWORC_USAGE_MAX_CALLS", 20, minimum=1)
CLAWORC_USAGE_VOLUME_INTERVAL = env_int(env, "CLAWORC_USAGE_VOLUME_INTERVAL", 600, minimum=1)
# A followed log: the last CLAWORC_LOG_FOLLOW_LINES lines, then new ones, for at most
# CLAWORC_LOG_FOLLOW_SECONDS per connection. Downloads take at most CLAWORC_LOG_DOWNLOAD_LINES.
CLAWORC_LOG_FOLLOW_LINES = env_int(env, "CLAWORC_LOG_FOLLOW_LINES", 200, minimum=0)
CLAWORC_LOG_FOLLOW_SECONDS = env_int(env, "CLAWORC_LOG_FOLLOW_SECONDS", 300, minimum=1)
CLAWORC_LOG_DOWNLOAD_LINES = env_int(env, "CLAWORC_LOG_DOWNLOAD_LINES", 10000, minimum=1)
# Bearer token a Prometheus scrape of /metrics presents; empty: staff sessions only.
CLAWORC_METRICS_TOKEN = env.str("CLAWORC_METRICS_TOKEN", default="")


# --- Run hours and idle stop (docs/schedules.md) ---------------------------------------------
# Seconds between two runs of the schedule and idle-stop beat: how late an edge may be applied.
CLAWORC_SCHEDULE_INTERVAL = env_int(env, "CLAWORC_SCHEDULE_INTERVAL", 60, minimum=5)
# Seconds an instance must stay idle before it is stopped; 0 turns idle stop off.
CLAWORC_IDLE_AFTER = env_int(env, "CLAWORC_IDLE_AFTER", 0, minimum=0)
# CPU (cores, 1.0 = one full core) every usage sample must stay below to count as idle.
CLAWORC_IDLE_CPU_THRESHOLD = env_float(env, "CLAWORC_IDLE_CPU_THRESHOLD", 0.05, minimum=0)


# --- Desktops (docs/desktops.md) -----------------------------------------------------------
# How people reach an instance's Chrome and Terminal: `ports` (published on the node, no login:
# the seed's behaviour), `both`, or `proxy` (only through the dashboard, behind its login).
CLAWORC_DESKTOP_ACCESS = env_choice(env, "CLAWORC_DESKTOP_ACCESS", "ports", DESKTOP_ACCESS_MODES)
# A Docker network the dashboard shares with the bots. Set: bots join it and, in proxy mode,
# publish nothing on the host. Unset: in proxy mode the ports are bound to 127.0.0.1 only.
CLAWORC_DOCKER_NETWORK = env.str("CLAWORC_DOCKER_NETWORK", default="")
# Where the dashboard reaches published ports when no network is shared (the host itself).
CLAWORC_DESKTOP_UPSTREAM_HOST = env.str("CLAWORC_DESKTOP_UPSTREAM_HOST", default="127.0.0.1")
CLAWORC_DESKTOP_MAX_SESSIONS_PER_USER = env_int(
    env, "CLAWORC_DESKTOP_MAX_SESSIONS_PER_USER", 4, minimum=1)
# Seconds to open the upstream connection (TCP + websocket handshake) or fetch a page.
CLAWORC_DESKTOP_CONNECT_TIMEOUT = env_int(env, "CLAWORC_DESKTOP_CONNECT_TIMEOUT", 10, minimum=1)
# Seconds between keepalive pings to the instance; no pong within as long closes the session.
CLAWORC_DESKTOP_PING_INTERVAL = env_int(env, "CLAWORC_DESKTOP_PING_INTERVAL", 20, minimum=1)
# Seconds between re-checks of an open session: permission still held, instance still running.
CLAWORC_DESKTOP_CHECK_INTERVAL = env_int(env, "CLAWORC_DESKTOP_CHECK_INTERVAL", 15, minimum=1)
# Seconds without any traffic after which a session is closed (0: never).
CLAWORC_DESKTOP_IDLE_TIMEOUT = env_int(env, "CLAWORC_DESKTOP_IDLE_TIMEOUT", 3600, minimum=0)

# --- Celery -----------------------------------------------------------------------------------
# The embedded default needs no server: kombu's SQLAlchemy transport on a SQLite file.
CELERY_BROKER_URL = env.str(
    "CELERY_BROKER_URL", default=f"sqla+sqlite:///{DATA_DIR / 'celery-broker.sqlite3'}"
)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or None
# Several Claworc sites (or test runs) can share one Redis by giving each its own queue.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ALWAYS_EAGER = env_bool(env, "CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Tasks are long, idempotent and acks_late: a worker reserves only the task it runs, so nothing
# waits unstarted in a busy worker past Redis' visibility timeout (and then runs twice).
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Fresh pool processes now and then: a leak or a wedged child does not live for ever.
CELERY_WORKER_MAX_TASKS_PER_CHILD = 100
# A task running when the broker connection drops is cancelled, not run blind.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Sending a task to a broker that is down fails fast: the intent is saved and owed either way.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0,
                                    "interval_step": 0.2, "interval_max": 0.5}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # acks_late tasks of a killed worker come back after the visibility timeout (1 h by default);
    # every task is idempotent and time-limited, so a little past the hard limit is safe.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CLAWORC_TASK_TIME_LIMIT + 60}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
