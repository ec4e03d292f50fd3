"""Resource usage, volume sizes and followed logs on the real Docker daemon, with every HTTP
request to the daemon counted: the sampler's calls per interval are pinned here."""

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from instances.models import Instance, InstanceUsage
from instances.usage import usage_sample
from orchestrators.docker import usage_from_stats
from orchestrators.quantity import parse_bytes

pytestmark = [pytest.mark.docker]


@pytest.fixture
def daemon_calls(docker_orch):
    """Every request the backend sends to the daemon, as (method, path)."""
    calls = []

    def count(response, *args, **kwargs):
        calls.append((response.request.method, response.request.path_url.split("?")[0]))

    api = docker_orch.client.api
    api.hooks["response"].append(count)
    yield calls
    api.hooks["response"].remove(count)


@pytest.fixture
def three_running(docker_orch, make_spec, docker_client):
    specs = [make_spec(f"use{i}") for i in range(3)]
    for spec in specs:
        assert docker_orch.ensure(spec).status == "running"
    yield specs


def test_usage_costs_one_stats_call_per_name(docker_orch, three_running, daemon_calls):
    names = [spec.name for spec in three_running]
    usage = docker_orch.usage(names)
    assert sorted(usage) == sorted(names)
    assert len(daemon_calls) == 3
    assert all(path.endswith("/stats") for _, path in daemon_calls)
    for spec in three_running:
        item = usage[spec.name]
        assert item.memory_bytes and item.memory_bytes > 0
        assert item.cpu_seconds_total is not None and item.cpu_seconds_total > 0
        assert item.memory_limit_bytes == parse_bytes(spec.resources.memory_limit)


def test_a_stopped_container_has_no_usage(docker_orch, make_spec):
    spec = make_spec("usestop")
    docker_orch.ensure(spec)
    docker_orch.stop(spec.name)
    assert docker_orch.usage([spec.name]) == {}


def test_volume_sizes_come_from_one_call(docker_orch, three_running, daemon_calls):
    sizes = docker_orch.volume_sizes()
    assert len(daemon_calls) == 1
    for spec in three_running:
        assert sorted(sizes[spec.name]) == sorted(
            f"claworc-{spec.name}-{s}" for s in ("clawdbot", "homebrew", "clawd", "chrome"))


@pytest.mark.django_db
def test_a_sampling_run_stays_within_its_call_budget_and_takes_turns(
    docker_orch, three_running, daemon_calls, settings
):
    settings.CLAWORC_USAGE_MAX_CALLS = 2
    Instance.objects.bulk_create(
        Instance(name=spec.name, display_name=spec.name, status="running")
        for spec in three_running)
    first = timezone.now()

    # Volume sizes are due on the first run: one df call leaves room for one stats call.
    report = usage_sample(orch=docker_orch, now=first)
    assert len(daemon_calls) == 2 and report.volumes and report.sampled == 1
    # Then two stats calls per run, the instances sampled longest ago first.
    for n in (1, 2):
        daemon_calls.clear()
        report = usage_sample(orch=docker_orch, now=first + timedelta(seconds=30 * n))
        assert len(daemon_calls) == 2 and not report.volumes and report.sampled == 2
    rows = InstanceUsage.objects.order_by("instance__name")
    assert rows.count() == 3
    assert all(r.memory_bytes for r in rows)
    assert all(r.volume_bytes is not None for r in rows)
    # The one sampled twice has a CPU rate made of its two samples.
    assert sum(r.cpu_cores is not None for r in rows) >= 1


def test_stats_of_a_stopped_container_read_as_nothing():
    assert usage_from_stats("x", {"cpu_stats": {}, "memory_stats": {}}) is None
    usage = usage_from_stats("x", {
        "cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
        "memory_stats": {"usage": 300, "limit": 1000, "stats": {"inactive_file": 100}},
    })
    assert (usage.cpu_seconds_total, usage.memory_bytes, usage.memory_limit_bytes) == (
        2.5, 200, 1000)


def test_a_followed_log_shows_new_lines_and_ends_at_its_deadline(
    docker_orch, make_spec, docker_client
):
    spec = make_spec("follow")
    docker_orch.ensure(spec)
    container = docker_client.containers.get(spec.name)
    container.exec_run(["sh", "-c", "echo before-follow > /proc/1/fd/1"])
    started = time.monotonic()
    stream = docker_orch.follow_logs(spec.name, lines=10, seconds=4)

    def write_later():
        time.sleep(1)
        container.exec_run(["sh", "-c", "echo written-after-follow > /proc/1/fd/1"])

    threading.Thread(target=write_later, daemon=True).start()
    text = "".join(stream)
    elapsed = time.monotonic() - started
    assert "before-follow" in text and "written-after-follow" in text
    assert 3.5 <= elapsed < 15, elapsed


def test_a_followed_log_closed_by_the_page_ends_its_wait_at_once(
    docker_orch, make_spec, docker_client
):
    """The page goes away while the reader waits for a line that never comes: close() from
    another thread ends the wait and the daemon connection, not the follow's deadline."""
    spec = make_spec("followclose")
    docker_orch.ensure(spec)
    seconds = 120
    stream = docker_orch.follow_logs(spec.name, lines=10, seconds=seconds)
    done = threading.Event()
    threading.Thread(target=lambda: (list(stream), done.set()), daemon=True).start()
    assert not done.wait(0.5)  # still following: nothing ends it but close()
    closed = time.monotonic()
    stream.close()
    assert done.wait(seconds / 4), "the reader still waits after close()"
    assert time.monotonic() - closed < seconds / 4
