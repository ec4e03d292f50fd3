"""`/metrics`: refused without credentials, and what a Prometheus scrape reads matches the
database (parsed with prometheus_client's own parser)."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from instances import tasks
from instances.models import ImagePull, Instance, InstanceUsage, WorkerHeartbeat
from orchestrators.registry import override
from tests.fakes import FakeOrchestrator, eager_tasks

pytestmark = pytest.mark.django_db

URL = "/metrics"
TOKEN = "scrape-token-for-tests-0123456789"


def parse(response) -> dict[str, list]:
    """{sample name: [(labels, value), ...]} from an exposition body."""
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples, name, **labels):
    matches = [v for lab, v in samples.get(name, []) if all(lab.get(k) == w
                                                              for k, w in labels.items())]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


def view_instance():
    return Permission.objects.get(codename="view_instance", content_type__app_label="instances")


@pytest.fixture
def staff(client):
    """Signed-in staff who may view instances: what a session scrape needs."""
    user = get_user_model().objects.create_user("ops", password="pw-for-tests-only",
                                                is_staff=True)
    user.user_permissions.add(view_instance())
    client.force_login(user)
    return user


def seed():
    done = {"observed_generation": 1, "owed_since": None}  # converged by a worker
    Instance.objects.bulk_create([
        Instance(name="bot-m-a", display_name="a", status="running", **done),
        Instance(name="bot-m-b", display_name="b", status="running", **done),
        Instance(name="bot-m-c", display_name="c", status="error", **done),
        Instance(name="bot-m-d", display_name="d", status="stopped", desired_state="stopped",
                 **done),
        # Stop accepted, not yet carried out: owed work.
        Instance(name="bot-m-e", display_name="e", status="stopping", desired_state="stopped",
                 generation=2, observed_generation=1),
    ])


def test_an_unauthenticated_scrape_is_refused(client, settings):
    settings.CLAWORC_METRICS_TOKEN = TOKEN
    seed()
    response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"claworc_instances" not in response.content
    wrong = client.get(URL, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401


def test_a_token_is_refused_when_none_is_configured(client, settings):
    settings.CLAWORC_METRICS_TOKEN = ""
    assert client.get(URL, headers={"Authorization": "Bearer "}).status_code == 401


def test_a_signed_in_user_who_is_not_staff_is_refused(client):
    user = get_user_model().objects.create_user("visitor", password="pw-for-tests-only")
    client.force_login(user)
    assert client.get(URL).status_code == 403


def test_staff_without_the_view_permission_are_refused_and_see_no_instance(client, settings):
    """Every instance is named in the exposition: a session needs what the admin's instance
    pages ask for, `instances.view_instance`; the scrape token works whoever is signed in."""
    settings.CLAWORC_METRICS_TOKEN = TOKEN
    seed()
    user = get_user_model().objects.create_user("ops-no-perms", password="pw-for-tests-only",
                                                is_staff=True)
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 403
    assert b"bot-m-" not in response.content and b"claworc_" not in response.content
    assert b"Can view instance" in response.content
    by_token = client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"})
    assert value(parse(by_token), "claworc_instances", status="running",
                 desired_state="running") == 2
    user.user_permissions.add(view_instance())
    assert client.get(URL).status_code == 200


def test_instance_counts_match_the_database(client, settings):
    settings.CLAWORC_METRICS_TOKEN = TOKEN
    seed()
    samples = parse(client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"}))
    for status in Instance.Status.values:
        for desired in Instance.DesiredState.values:
            expected = Instance.objects.filter(status=status, desired_state=desired).count()
            assert value(samples, "claworc_instances", status=status,
                         desired_state=desired) == expected
    assert value(samples, "claworc_instances", status="running", desired_state="running") == 2
    assert sum(v for _, v in samples["claworc_instances"]) == Instance.objects.count()
    # Only the accepted-but-not-done Stop is owed (the error waits for a person).
    assert value(samples, "claworc_owed_work_instances") == 1
    assert value(samples, "claworc_owed_work_oldest_age_seconds") >= 0


def test_a_staff_session_may_scrape_and_the_query_count_stays_flat(
    client, staff, django_assert_max_num_queries
):
    Instance.objects.bulk_create(
        Instance(name=f"bot-m-{i:03d}", display_name=str(i), status="running")
        for i in range(150))
    InstanceUsage.objects.bulk_create(
        InstanceUsage(instance=inst, sampled_at=timezone.now(), cpu_cores=0.25,
                      memory_bytes=300 * 2**20) for inst in Instance.objects.all())
    # session, user, the user's and the groups' permissions (view_instance), counts, owed work,
    # usage rows, pulls by state, pulls under way, workers, last sample
    with django_assert_max_num_queries(11):
        samples = parse(client.get(URL))
    assert value(samples, "claworc_instances", status="running", desired_state="running") == 150
    assert len(samples["claworc_instance_cpu_cores"]) == 150


def test_usage_of_the_last_sample_per_instance(client, staff):
    seed()
    sampled = timezone.now() - timedelta(seconds=40)
    InstanceUsage.objects.create(
        instance=Instance.objects.get(name="bot-m-a"), sampled_at=sampled, cpu_cores=1.5,
        memory_bytes=512 * 2**20, memory_limit_bytes=4 * 2**30, volume_bytes=12345)
    samples = parse(client.get(URL))
    assert value(samples, "claworc_instance_cpu_cores", instance="bot-m-a") == 1.5
    assert value(samples, "claworc_instance_memory_bytes", instance="bot-m-a") == 512 * 2**20
    assert value(samples, "claworc_instance_memory_limit_bytes", instance="bot-m-a") == 4 * 2**30
    assert value(samples, "claworc_instance_volume_bytes", instance="bot-m-a") == 12345
    assert "bot-m-b" not in str(samples["claworc_instance_cpu_cores"])
    assert 40 <= value(samples, "claworc_usage_sample_age_seconds") < 100


def test_converge_and_reconcile_all_durations_are_histograms(
    client, staff, django_capture_on_commit_callbacks
):
    before = parse(client.get(URL))
    converges = value(before, "claworc_converge_duration_seconds_count")
    runs = value(before, "claworc_reconcile_all_duration_seconds_count")
    with override(FakeOrchestrator()), eager_tasks(), \
            django_capture_on_commit_callbacks(execute=True):
        tasks.reconcile_all.delay()  # nothing yet, so it enqueues nothing
        Instance.objects.create(display_name="M Converge")
    after = parse(client.get(URL))
    assert value(after, "claworc_converge_duration_seconds_count") == converges + 1
    assert value(after, "claworc_reconcile_all_duration_seconds_count") == runs + 1
    assert value(after, "claworc_converge_duration_seconds_bucket", le="+Inf") == converges + 1


def test_durations_measured_in_a_worker_process_reach_the_scrape(tmp_path, monkeypatch, staff,
                                                                  client):
    """With PROMETHEUS_MULTIPROC_DIR (as `make run` sets it) another process's histograms are
    summed into the web process's scrape."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    code = ("import django; django.setup(); from instances import metrics; "
            "metrics.CONVERGE_SECONDS.observe(0.3); metrics.CONVERGE_SECONDS.observe(7)")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory),
           "DJANGO_SETTINGS_MODULE": "claworc_site.settings"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120,
                   cwd=str(Path(__file__).resolve().parents[2]))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    samples = parse(client.get(URL))
    assert value(samples, "claworc_converge_duration_seconds_count") == 2
    assert value(samples, "claworc_converge_duration_seconds_sum") == pytest.approx(7.3)
    assert value(samples, "claworc_converge_duration_seconds_bucket", le="0.5") == 1


def test_pull_progress_of_the_pulls_under_way(client, staff):
    ImagePull.objects.create(image="agent:2", state="pulling", bytes_done=4_000_000,
                             bytes_total=16_000_000, heartbeat_at=timezone.now())
    ImagePull.objects.create(image="agent:1", state="done", bytes_done=9, bytes_total=9)
    samples = parse(client.get(URL))
    assert value(samples, "claworc_image_pulls", state="pulling") == 1
    assert value(samples, "claworc_image_pulls", state="done") == 1
    assert value(samples, "claworc_image_pulls", state="error") == 0
    assert value(samples, "claworc_image_pull_bytes_done", image="agent:2") == 4_000_000
    assert value(samples, "claworc_image_pull_bytes_total", image="agent:2") == 16_000_000
    assert value(samples, "claworc_image_pull_heartbeat_age_seconds", image="agent:2") < 60
    assert "agent:1" not in str(samples["claworc_image_pull_bytes_done"])


def test_worker_heartbeat_ages(client, staff):
    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="worker@a", seen_at=now - timedelta(seconds=3),
                                   last_task_at=now - timedelta(seconds=70))
    WorkerHeartbeat.objects.create(hostname="worker@b", seen_at=now - timedelta(seconds=400))
    samples = parse(client.get(URL))
    assert 3 <= value(samples, "claworc_worker_heartbeat_age_seconds", worker="worker@a") < 60
    assert 400 <= value(samples, "claworc_worker_heartbeat_age_seconds", worker="worker@b") < 460
    assert 70 <= value(samples, "claworc_worker_last_task_age_seconds", worker="worker@a") < 130
    assert [lab["worker"] for lab, _ in samples["claworc_worker_last_task_age_seconds"]] == [
        "worker@a"]
