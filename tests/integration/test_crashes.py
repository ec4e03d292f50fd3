"""Fault injection: a real `kill -9` of a real worker (its whole process group) at each step of
a converge and of a teardown, on the embedded broker and on Redis. Recovery must not depend on
the message coming back: a fresh worker with beat converges the instance by query within the
lease's TTL plus two reconcile intervals, with exactly one container, four volumes and one port
pair (or, for a teardown, nothing left).

The kill is injected by tests/integration/killer.py, a test-only Celery app around the real one.
"""

import time

import pytest

from tests.integration.support import Admin, docker_objects, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.worker, pytest.mark.slow]

RECONCILE_INTERVAL = 2
BROKERS = [pytest.param("redis", marks=pytest.mark.redis), "sqla"]


def _recovery_budget(stack) -> float:
    """Lease TTL + two reconcile intervals, from the stack's own settings, plus what one converge
    takes on a loaded machine (create and start a container, ~1 s idle)."""
    return stack.lease_ttl() + 2 * RECONCILE_INTERVAL + 30


def _arm(stack, tmp_path, step: str):
    marker = tmp_path / f"killed-at-{step}"
    stack.env.update(CLAWORC_TEST_KILL_AT=step, CLAWORC_TEST_KILL_MARKER=str(marker))
    return marker


def _wait_killed(stack, key, marker):
    proc = stack.procs[key]
    wait_for(f"the worker to be killed at {marker.name}",
             lambda: marker.exists() and proc.poll() is not None, timeout=90)
    stack.kill(key)  # reap it (already dead)


def _assert_one_of_everything(stack, docker_client, name, row):
    containers, volumes = docker_objects(docker_client, name)
    assert [(c.name, c.state) for c in containers] == [(name, "running")]
    assert volumes == sorted(f"claworc-{name}-{s}"
                             for s in ("clawdbot", "homebrew", "clawd", "chrome"))
    assert stack.db.rows("SELECT port_chrome, port_terminal FROM instances_portallocation") == [
        (row["port_chrome"], row["port_terminal"])]
    assert containers[0].ports == (row["port_chrome"], row["port_terminal"])


@pytest.mark.parametrize("broker", BROKERS)
@pytest.mark.parametrize("step", ["volumes", "config", "create", "start", "status"])
def test_worker_killed_during_a_converge_recovers_by_query(make_stack, docker_client, tmp_path,
                                                            broker, step):
    stack = make_stack(broker=broker, reconcile_interval=RECONCILE_INTERVAL)
    stack.start_web()
    marker = _arm(stack, tmp_path, step)
    stack.start_worker("killer", app="tests.integration.killer")
    admin = Admin(stack.base_url)
    admin.login()
    name = stack.name(f"kill-{step}")

    admin.add_instance(name)
    _wait_killed(stack, "killer", marker)
    assert stack.db.instance(name)["status"] == "creating"

    stack.start_worker("recovery", beat=True)
    started = time.monotonic()
    row = stack.wait_running(docker_client, name, timeout=_recovery_budget(stack))
    assert time.monotonic() - started < _recovery_budget(stack)
    _assert_one_of_everything(stack, docker_client, name, row)
    generation, observed = stack.db.rows(
        "SELECT generation, observed_generation FROM instances_instance WHERE name = %s",
        (name,))[0]
    assert generation == observed


@pytest.mark.parametrize("broker", BROKERS)
def test_worker_killed_during_a_teardown_finishes_it_by_query(make_stack, docker_client,
                                                               tmp_path, broker):
    stack = make_stack(broker=broker, reconcile_interval=RECONCILE_INTERVAL)
    stack.start_web()
    stack.start_worker("worker")
    admin = Admin(stack.base_url)
    admin.login()
    name = stack.name("kill-teardown")
    admin.add_instance(name)
    row = stack.wait_running(docker_client, name, timeout=60)
    stack.stop()  # the normal worker (and web) go; a killer takes over
    stack.start_web()
    admin = Admin(stack.base_url)
    admin.login()
    marker = _arm(stack, tmp_path, "teardown")
    stack.start_worker("killer", app="tests.integration.killer")

    said = admin.action("delete_with_volumes", [row["id"]], confirm="yes")
    assert f"Queued deletion of 1 instance: {name}." in said
    _wait_killed(stack, "killer", marker)
    # Killed after the container went, before the row: still there, name and ports reserved.
    assert stack.db.instance(name)["status"] == "deleting"

    stack.start_worker("recovery", beat=True)
    wait_for("the teardown to finish", lambda: stack.db.instance(name) is None,
             timeout=_recovery_budget(stack))
    assert docker_objects(docker_client, name) == ([], [])
    assert stack.db.rows("SELECT COUNT(*) FROM instances_portallocation") == [(0,)]
    assert not (stack.config_dir / name).exists()
