"""End to end: run hours set in the admin over HTTP, Celery beat in a real worker, real dockerd.

A window that closes a minute or two from now: the beat stops the container at its end, once,
and the instance's page says why.
"""

import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.support import Admin, port_is_closed, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.worker, pytest.mark.slow]

INTERVAL = 5  # CLAWORC_SCHEDULE_INTERVAL's minimum


@pytest.mark.redis
def test_a_window_end_stops_the_container(make_stack, docker_client):
    stack = make_stack(broker="redis", extra_env={"CLAWORC_SCHEDULE_INTERVAL": str(INTERVAL)})
    stack.start_web()
    stack.start_worker(beat=True)
    admin = Admin(stack.base_url)
    admin.login()
    name = stack.name("sched")
    admin.add_instance(name)
    row = stack.wait_running(docker_client, name, timeout=90)

    # Every day, opened two hours ago, closing at the start of the minute after next (a window
    # across midnight works the same: it opened yesterday).
    now = datetime.now(UTC)
    end = (now + timedelta(minutes=2)).replace(second=0, microsecond=0)
    start = now - timedelta(hours=2)
    admin.change_instance(
        row["id"], schedule_days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        schedule_start=f"{start:%H:%M}", schedule_end=f"{end:%H:%M}", schedule_timezone="UTC")

    # The beat notes the new schedule (acting from its next edge), then stops it at the end.
    wait_for("the beat to take the schedule on", lambda: stack.db.rows(
        "SELECT schedule_applied_at FROM instances_instance WHERE name = %s",
        (name,))[0][0] is not None, timeout=6 * INTERVAL)
    assert stack.db.instance(name)["desired_state"] == "running"  # not acted on yet
    left = (end - datetime.now(UTC)).total_seconds()
    wait_for("the scheduled stop", lambda: stack.db.instance(name)["status"] == "stopped",
             timeout=max(0, left) + 6 * INTERVAL + 60)
    container = docker_client.containers.get(name)
    assert container.status == "exited"
    assert port_is_closed(row["port_chrome"]) and port_is_closed(row["port_terminal"])

    by_schedule = [(a, r, m) for a, r, actor, m in stack.db.activities(name)
                   if actor == "schedule"]
    overnight = " (next day)" if end.time() < start.time() else ""
    window = f"every day {start:%H:%M}-{end:%H:%M}{overnight} UTC"
    assert by_schedule == [("stop", "queued", f"Scheduled stop: window {window} closed at "
                                              f"{end:%a %H:%M}.")]
    page = admin.http.get(f"{stack.base_url}/instances/{name}/", timeout=30).text
    assert "Stopped by the schedule at" in page and window in page
    # Later beats leave it alone: the edge was applied once.
    beats_before = stack.log("worker", tail=10**7).count("apply_schedules")
    wait_for("two more beats", lambda: stack.log("worker", tail=10**7).count(
        "apply_schedules") >= beats_before + 4, timeout=6 * INTERVAL)
    assert len([a for a in stack.db.activities(name) if a[2] == "schedule"]) == 1
    assert stack.db.instance(name)["status"] == "stopped"


@pytest.mark.redis
def test_an_idle_instance_is_stopped_and_an_opted_out_one_is_not(make_stack, docker_client):
    idle_after, usage_every = 10, 2
    stack = make_stack(broker="redis", extra_env={
        "CLAWORC_SCHEDULE_INTERVAL": str(INTERVAL), "CLAWORC_IDLE_AFTER": str(idle_after),
        "CLAWORC_USAGE_INTERVAL": str(usage_every), "CLAWORC_IDLE_CPU_THRESHOLD": "0.05"})
    stack.start_web()
    stack.start_worker(beat=True)
    admin = Admin(stack.base_url)
    admin.login()
    idle, kept = stack.name("idle"), stack.name("kept")
    admin.add_instance(idle)
    admin.add_instance(kept)
    stack.db.execute("UPDATE instances_instance SET idle_stop = %s WHERE name = %s",
                     (False, kept))
    row = stack.wait_running(docker_client, idle, timeout=90)
    stack.wait_running(docker_client, kept, timeout=90)

    # The stand-in agent (busybox httpd) uses next to no CPU: sampled by the real sampler from
    # `docker stats`, it is idle after `idle_after` s, and stopped at the next beat.
    wait_for("the idle stop", lambda: stack.db.instance(idle)["status"] == "stopped",
             timeout=idle_after + 4 * usage_every + 6 * INTERVAL + 60)
    assert docker_client.containers.get(idle).status == "exited"
    assert port_is_closed(row["port_chrome"])
    [(action, result, message)] = [(a, r, m) for a, r, actor, m in stack.db.activities(idle)
                                   if actor == "idle"]
    assert (action, result) == ("stop", "queued")
    assert re.match(r"Stopped when idle: idle for \d+ s: CPU 0\.0\d cores < 0\.05, ", message)
    assert message.endswith("cores < 0.05, desktop sessions not visible "
                            "(CLAWORC_DESKTOP_ACCESS=ports).")
    page = admin.http.get(f"{stack.base_url}/instances/{idle}/", timeout=30).text
    assert "Stopped when idle at" in page
    # The opted-out one had the same CPU and keeps running, beat after beat.
    beats = stack.log("worker", tail=10**7).count("apply_schedules")
    wait_for("two more beats", lambda: stack.log("worker", tail=10**7).count(
        "apply_schedules") >= beats + 4, timeout=6 * INTERVAL)
    assert stack.db.instance(kept)["status"] == "running"
    assert docker_client.containers.get(kept).status == "running"
    assert not [a for a in stack.db.activities(kept) if a[2] == "idle"]
