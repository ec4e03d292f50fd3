"""End to end: a staff member in the admin over HTTP, a real Celery worker process, real dockerd.

Each test starts its own stack (tests/integration/support.py) and uses only instances named
`bot-t4-…` and host ports 32000-32399.
"""

import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.support import (
    PORT_END,
    PORT_START,
    Admin,
    docker_objects,
    port_answers,
    port_is_closed,
    published_ports,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.worker, pytest.mark.slow]


def _recorded(stack, name: str, action: str, result: str = "ok") -> bool:
    # The worker writes the status first and its Activity right after (converge.py), and a
    # delete's "ok" after the row is gone: a wait on the status alone can end in between.
    return (action, result) in [(a, r) for a, r, _, _ in stack.db.activities(name)]


@pytest.mark.parametrize("broker", [pytest.param("redis", marks=pytest.mark.redis), "sqla"])
def test_admin_add_stop_delete(make_stack, docker_client, broker):
    stack = make_stack(broker=broker)
    stack.start_web()
    stack.start_worker()
    admin = Admin(stack.base_url)
    admin.login()
    name = stack.name(f"flow-{broker}")

    admin.add_instance(name)
    row = stack.wait_running(docker_client, name, timeout=60)
    assert PORT_START <= row["port_chrome"] < PORT_END and row["port_chrome"] % 2 == 0
    assert stack.port_start <= row["port_chrome"] < stack.port_end
    assert row["port_terminal"] == row["port_chrome"] + 1
    container = docker_client.containers.get(name)
    assert published_ports(container) == (row["port_chrome"], row["port_terminal"])
    assert container.labels["claworc.instance"] == name
    containers, volumes = docker_objects(docker_client, name)
    assert [(c.name, c.ports) for c in containers] == [
        (name, (row["port_chrome"], row["port_terminal"]))]
    assert volumes == sorted(f"claworc-{name}-{s}"
                             for s in ("clawdbot", "homebrew", "clawd", "chrome"))
    assert (stack.config_dir / name / "clawdbot.json").is_file()
    # The changelist shows it running, with both VNC links.
    listing = admin.http.get(f"{stack.base_url}/admin/instances/instance/", timeout=10).text
    assert f"http://127.0.0.1:{row['port_chrome']}/vnc.html?autoconnect=true" in listing
    assert f"http://127.0.0.1:{row['port_terminal']}/vnc.html?autoconnect=true" in listing

    wait_for("the create's activity", lambda: _recorded(stack, name, "ensure"),
             timeout=stack.step_budget())
    said = admin.action("stop_instances", [row["id"]])
    assert f"Queued stop of 1 instance: {name}." in said
    wait_for("the stop", lambda: stack.db.instance(name)["status"] == "stopped"
             and _recorded(stack, name, "stop"), timeout=stack.step_budget())
    container.reload()
    assert container.status == "exited"
    assert port_is_closed(row["port_chrome"]) and port_is_closed(row["port_terminal"])

    said = admin.action("delete_with_volumes", [row["id"]], confirm="yes")
    assert f"Queued deletion of 1 instance: {name}." in said
    # The container goes first, then the volumes, the row and last its Activity: wait for the
    # whole end state.
    wait_for("nothing left", lambda: docker_objects(docker_client, name) == ([], [])
             and stack.db.instance(name) is None and _recorded(stack, name, "delete"),
             timeout=stack.step_budget())
    assert stack.db.rows("SELECT COUNT(*) FROM instances_portallocation") == [(0,)]
    assert not (stack.config_dir / name).exists()
    actions = [(a, r) for a, r, _, _ in stack.db.activities(name)]
    assert actions == [("create", "queued"), ("ensure", "ok"), ("stop", "queued"), ("stop", "ok"),
                       ("delete", "queued"), ("delete", "ok")]
    assert {actor for _, _, actor, _ in stack.db.activities(name)} == {"t4admin", "system"}


@pytest.mark.redis
def test_worker_killed_mid_create_converges_with_nothing_duplicated(make_stack, docker_client):
    stack = make_stack(broker="redis", reconcile_interval=2)
    stack.start_web()
    stack.start_worker("worker1")
    admin = Admin(stack.base_url)
    admin.login()
    name = stack.name("crash")

    admin.add_instance(name)
    # Kill the worker (its whole process group, like a crashed machine) as soon as it has begun
    # making Docker objects for the instance, before it could record the result.
    wait_for("the worker to start creating", lambda: docker_objects(docker_client, name)[1],
             timeout=30, interval=0.005)
    stack.kill("worker1", signal.SIGKILL)
    at_kill = stack.db.instance(name)
    assert at_kill["status"] == "creating", at_kill
    assert stack.db.rows("SELECT COUNT(*) FROM instances_instancelease WHERE name = %s",
                         (name,)) == [(1,)]  # the dead worker's lease: it has to expire

    stack.start_worker("worker2", beat=True)
    row = stack.wait_running(docker_client, name, timeout=90)

    containers, volumes = docker_objects(docker_client, name)
    assert [(c.name, c.state) for c in containers] == [(name, "running")]
    assert len(volumes) == 4
    assert stack.db.rows(
        "SELECT port_chrome, port_terminal FROM instances_portallocation") == [
        (row["port_chrome"], row["port_terminal"])]
    assert containers[0].ports == (row["port_chrome"], row["port_terminal"])


@pytest.mark.redis
@pytest.mark.postgres
def test_two_workers_twenty_instances_at_once_no_duplicates(make_stack, docker_client):
    stack = make_stack(broker="redis", database="postgres")
    stack.start_web()
    stack.start_worker("worker1")
    stack.start_worker("worker2")
    names = [stack.name(f"many-{i:02d}") for i in range(20)]

    admin = Admin(stack.base_url)
    admin.login()

    def add(name):
        # One browser tab per instance, all in the same logged-in session.
        tab = Admin(stack.base_url)
        tab.http.cookies.update(admin.http.cookies)
        tab.add_instance(name)

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(add, names))
    # Every instance is also reconciled twice more at once, so both workers race on each.
    ids = [stack.db.instance(n)["id"] for n in names]
    for pk in ids * 2:
        stack.send_task("instances.tasks.reconcile_instance", pk)

    rows = {n: stack.wait_running(docker_client, n, timeout=120) for n in names}
    containers, volumes = docker_objects(docker_client, stack.name("many-"))
    assert [c.name for c in containers] == names
    assert len(volumes) == 80 and len(set(volumes)) == 80
    pairs = [c.ports for c in containers]
    assert len({p for pair in pairs for p in pair}) == 40
    assert sorted(pairs) == sorted((r["port_chrome"], r["port_terminal"]) for r in rows.values())
    assert stack.db.rows("SELECT COUNT(*) FROM instances_portallocation") == [(20,)]
    assert stack.db.rows(
        "SELECT COUNT(*) FROM instances_activity WHERE result = 'error'") == [(0,)]


@pytest.mark.redis
def test_drift_one_reconcile_all_restores_removed_and_stopped(make_stack, docker_client):
    stack = make_stack(broker="redis")
    stack.start_web()
    stack.start_worker()
    admin = Admin(stack.base_url)
    admin.login()
    removed, stopped = stack.name("drift-a"), stack.name("drift-b")
    admin.add_instance(removed)
    admin.add_instance(stopped)
    before = {n: stack.wait_running(docker_client, n) for n in (removed, stopped)}

    docker_client.containers.get(removed).remove(force=True)  # docker rm -f
    docker_client.containers.get(stopped).stop(timeout=5)  # docker stop
    assert port_answers(before[removed]["port_chrome"]) == ""
    assert port_answers(before[stopped]["port_chrome"]) == ""

    report = stack.reconcile_all_once()
    assert "2 repairs" in report, report
    for name in (removed, stopped):
        after = stack.wait_running(docker_client, name, timeout=60)
        assert (after["port_chrome"], after["port_terminal"]) == (
            before[name]["port_chrome"], before[name]["port_terminal"])
    drift = {n: [m for a, _, _, m in stack.db.activities(n) if a == "drift"]
             for n in (removed, stopped)}
    assert drift[removed] == [
        f"The workload of {removed} is missing (removed outside Claworc); recreating it."]
    assert len(drift[stopped]) == 1
    assert drift[stopped][0].startswith(f"{stopped} was stopped outside Claworc (exit code")
    assert len(docker_objects(docker_client, stack.name("drift-"))[0]) == 2
