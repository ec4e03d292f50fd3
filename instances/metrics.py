"""`GET /metrics` in Prometheus' text format (prometheus_client), for scrapes and alerts.

Two sources, rendered one after the other:

- the database, read at each scrape by `DatabaseCollector` (a handful of aggregate queries
  whatever the number of instances): instances by status and desired state, owed work, the last
  usage samples;
- durations measured where the work runs (histograms below). The worker is another process, so
  they are shared through prometheus_client's multiprocess mode: every process started with
  PROMETHEUS_MULTIPROC_DIR set (`make run` sets it) writes there and the scrape sums them.
  Without it, a scrape shows the serving process's own measurements only.

Access: a bearer token (CLAWORC_METRICS_TOKEN), or a signed-in staff session with the
`instances.view_instance` permission (the exposition names every instance, as the status pages
do); anonymous requests get 401, other signed-in users 403. No secret is ever a label.
"""

from __future__ import annotations

import hmac
import os

from django.conf import settings
from django.db.models import Count, Max, Min, Q
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from .models import ImagePull, Instance, InstanceUsage, WorkerHeartbeat
from .views import can_view_instances

_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

CONVERGE_SECONDS = Histogram(
    "claworc_converge_duration_seconds",
    "Seconds one reconcile_instance task took to converge an instance (worker side).",
    buckets=_SECONDS,
)
RECONCILE_ALL_SECONDS = Histogram(
    "claworc_reconcile_all_duration_seconds",
    "Seconds one periodic reconcile_all run took (one list call, bulk writes).",
    buckets=_SECONDS,
)


def owed_work_filter() -> Q:
    """Instances that still owe work (Instance.objects.owing_work(): an intent not yet carried
    out, or a status that is not the desired one); an error waits for a person and is counted
    by claworc_instances{status="error"} instead."""
    return ~Q(status=Instance.Status.ERROR) & Q(
        pk__in=Instance.objects.owing_work().values("pk"))


class DatabaseCollector:
    """Gauges read from the database at each scrape."""

    def collect(self):
        now = timezone.now()
        instances = GaugeMetricFamily(
            "claworc_instances", "Instances by observed status and desired state.",
            labels=["status", "desired_state"])
        counts = {
            (row["status"], row["desired_state"]): row["n"]
            for row in Instance.objects.order_by().values("status", "desired_state")
            .annotate(n=Count("pk"))
        }
        # Every pair, zeros included, so an alert on a series that is 0 today still fires later.
        statuses = list(Instance.Status.values) + sorted(
            {s for s, _ in counts if s not in Instance.Status.values})
        for status in statuses:
            for desired in Instance.DesiredState.values:
                instances.add_metric([status, desired], counts.get((status, desired), 0))
        yield instances

        # Since the intent was saved (the row's last change): how long work has waited.
        owed = Instance.objects.filter(owed_work_filter()).aggregate(
            n=Count("pk"), oldest=Min("updated_at"))
        yield GaugeMetricFamily(
            "claworc_owed_work_instances",
            "Instances whose status is not yet their desired state (errors excluded).",
            value=owed["n"])
        yield GaugeMetricFamily(
            "claworc_owed_work_oldest_age_seconds",
            "Age of the oldest owed intent, 0 when nothing is owed.",
            value=(now - owed["oldest"]).total_seconds() if owed["oldest"] else 0)

        cpu = GaugeMetricFamily("claworc_instance_cpu_cores",
                                "CPU in use from the last sample (1 = one core).",
                                labels=["instance"])
        memory = GaugeMetricFamily("claworc_instance_memory_bytes",
                                   "Memory in use from the last sample.", labels=["instance"])
        limit = GaugeMetricFamily("claworc_instance_memory_limit_bytes",
                                  "Memory limit seen by the backend.", labels=["instance"])
        volumes = GaugeMetricFamily("claworc_instance_volume_bytes",
                                    "Bytes used by the instance's volumes together.",
                                    labels=["instance"])
        rows = InstanceUsage.objects.values_list(
            "instance__name", "cpu_cores", "memory_bytes", "memory_limit_bytes", "volume_bytes")
        for name, cores, used, cap, disk in rows:
            for family, value in ((cpu, cores), (memory, used), (limit, cap), (volumes, disk)):
                if value is not None:
                    family.add_metric([name], value)
        yield from (cpu, memory, limit, volumes)

        yield from _pull_metrics(now)

        # Per worker: a main process that stops beating is dead; one that beats but whose last
        # finished task is old while work is owed is wedged (see /health).
        seen = GaugeMetricFamily("claworc_worker_heartbeat_age_seconds",
                                 "Seconds since the worker's main process last beat.",
                                 labels=["worker"])
        finished = GaugeMetricFamily("claworc_worker_last_task_age_seconds",
                                     "Seconds since the worker last finished a task.",
                                     labels=["worker"])
        for host, seen_at, task_at in WorkerHeartbeat.objects.values_list(
                "hostname", "seen_at", "last_task_at"):
            seen.add_metric([host], (now - seen_at).total_seconds())
            if task_at is not None:
                finished.add_metric([host], (now - task_at).total_seconds())
        yield from (seen, finished)

        last = InstanceUsage.objects.aggregate(last=Max("sampled_at"))["last"]
        if last is not None:
            yield GaugeMetricFamily(
                "claworc_usage_sample_age_seconds",
                "Seconds since the worker last sampled resource usage.",
                value=(now - last).total_seconds())


def _pull_metrics(now):
    """Image pulls: how many in each state, and the progress of those under way."""
    states = GaugeMetricFamily("claworc_image_pulls", "Image pulls by state.",
                               labels=["state"])
    counts = dict(ImagePull.objects.order_by().values_list("state").annotate(n=Count("pk")))
    for state in ImagePull.State.values:
        states.add_metric([state], counts.get(state, 0))
    yield states
    done = GaugeMetricFamily("claworc_image_pull_bytes_done",
                             "Bytes downloaded so far by a pull under way.", labels=["image"])
    total = GaugeMetricFamily("claworc_image_pull_bytes_total",
                              "Bytes a pull under way downloads (grows as layers start).",
                              labels=["image"])
    age = GaugeMetricFamily("claworc_image_pull_heartbeat_age_seconds",
                            "Seconds since a pull under way last reported progress.",
                            labels=["image"])
    active = ImagePull.objects.filter(
        state__in=[ImagePull.State.QUEUED, ImagePull.State.PULLING],
    ).values_list("image", "bytes_done", "bytes_total", "heartbeat_at", "requested_at")
    for image, got, size, beat, requested in active:
        done.add_metric([image], got)
        total.add_metric([image], size)
        age.add_metric([image], (now - (beat or requested)).total_seconds())
    yield from (done, total, age)


def exposition() -> bytes:
    """The whole /metrics body."""
    database = CollectorRegistry(auto_describe=False)
    database.register(DatabaseCollector())
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        processes = CollectorRegistry()
        MultiProcessCollector(processes, path=directory)
    else:
        processes = REGISTRY
    return generate_latest(database) + generate_latest(processes)


def _token_ok(request) -> bool:
    token = settings.CLAWORC_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode())


@never_cache
def metrics_view(request):
    user = request.user
    if not _token_ok(request):
        if not user.is_authenticated:
            response = HttpResponse(
                "Authentication required: send 'Authorization: Bearer <CLAWORC_METRICS_TOKEN>' "
                "or sign in as staff.\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="claworc-metrics"'
            return response
        if not can_view_instances(user):
            return HttpResponse("Staff with the 'Can view instance' permission only.\n",
                                status=403, content_type="text/plain")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)

