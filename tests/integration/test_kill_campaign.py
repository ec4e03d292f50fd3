"""A randomized campaign: rounds of "add two instances, then `kill -9` the worker (its whole
process group: main process, pool and embedded beat) at a random moment", on the embedded broker,
which never redelivers a message. Recovery must come from the owed-work query alone: at the end
every instance runs, with exactly one container, four volumes and one port pair, and nothing
else was left behind.

The seed is printed (and CLAWORC_CAMPAIGN_SEED replays a run); CLAWORC_CAMPAIGN_ROUNDS sets
the number of rounds (at least 8).
"""

import os
import random
import time

import pytest

from tests.integration.support import Admin, docker_objects, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.worker, pytest.mark.slow]

RECONCILE_INTERVAL = 2
ROUNDS = max(8, int(os.environ.get("CLAWORC_CAMPAIGN_ROUNDS", "8")))
PER_ROUND = 2
#: The longest a kill waits after the round's adds: a converge takes 1-3 s on a loaded machine,
#: so kills land before, during and after the steps of the round's converges and of the
#: recoveries of earlier rounds.
MAX_KILL_DELAY = 4.0
VOLUME_SUFFIXES = ("clawdbot", "homebrew", "clawd", "chrome")


def _recovery_budget(stack, instances: int, concurrency: int) -> float:
    """From the stack's settings: a killed worker's lease expires (TTL), reconcile_all sends what
    is owed within two intervals, and the converges then take their turn on the workers (a few
    seconds each on a loaded 2-core machine)."""
    return stack.lease_ttl() + 2 * RECONCILE_INTERVAL + 30 + 5 * instances / concurrency


def test_random_kills_while_creating_lose_and_duplicate_nothing(make_stack, docker_client):
    seed = int(os.environ.get("CLAWORC_CAMPAIGN_SEED") or random.randrange(2**32))
    print(f"kill campaign seed {seed} (replay: CLAWORC_CAMPAIGN_SEED={seed})")
    rng = random.Random(seed)
    stack = make_stack(broker="sqla", reconcile_interval=RECONCILE_INTERVAL, extra_env={
        # Every round kills the worker, so one instance may lose several workers in a row; the
        # cap on lost workers guards against a converge that kills its worker (out of memory),
        # which is not what this campaign does.
        "CLAWORC_MAX_WORKER_LOSSES": str(ROUNDS + 1),
    })
    stack.start_web()
    admin = Admin(stack.base_url)
    admin.login()

    names: list[str] = []
    kills: list[tuple[int, float, dict[str, str]]] = []
    for round_no in range(ROUNDS):
        stack.start_worker(f"round{round_no}", beat=True)
        for i in range(PER_ROUND):
            name = stack.name(f"c{round_no}-{i}")
            admin.add_instance(name)
            names.append(name)
        delay = rng.uniform(0, MAX_KILL_DELAY)
        time.sleep(delay)  # the random moment of the kill, not a wait for a condition
        stack.kill(f"round{round_no}")
        statuses = {n: (stack.db.instance(n) or {}).get("status", "gone") for n in names}
        kills.append((round_no, delay, statuses))
        print(f"round {round_no}: killed after {delay:.2f} s; "
              f"{sum(s != 'running' for s in statuses.values())} of {len(names)} not running")

    concurrency = 2
    stack.start_worker("recovery", beat=True, concurrency=concurrency)
    last_kill = time.monotonic()
    budget = _recovery_budget(stack, len(names), concurrency)
    running_at: dict[str, float] = {}

    def all_running():
        for name in names:
            row = stack.db.instance(name)
            if name not in running_at and row and row["status"] == "running":
                running_at[name] = time.monotonic() - last_kill
        return len(running_at) == len(names)

    try:
        wait_for(f"all {len(names)} instances to run after the last kill", all_running,
                 timeout=budget, interval=0.5)
    except AssertionError:
        rows = {n: stack.db.instance(n) for n in names if n not in running_at}
        raise AssertionError(f"seed {seed}: not running after {budget:.0f} s: {rows}\n"
                             f"kills: {kills}\n{stack.logs()}") from None
    converged = max(running_at.values())
    print(f"seed {seed}: {ROUNDS} rounds, {len(names)} instances; all running "
          f"{converged:.1f} s after the last kill (budget {budget:.0f} s); slowest "
          f"{max(running_at, key=running_at.get)}")

    rows = {n: stack.wait_running(docker_client, n, timeout=budget) for n in names}
    containers, volumes = docker_objects(docker_client, stack.prefix)
    assert sorted((c.name, c.state) for c in containers) == sorted(
        (n, "running") for n in names), f"seed {seed}"
    assert volumes == sorted(f"claworc-{n}-{s}" for n in names for s in VOLUME_SUFFIXES), (
        f"seed {seed}")
    pairs = stack.db.rows("SELECT port_chrome, port_terminal FROM instances_portallocation")
    assert sorted(pairs) == sorted((r["port_chrome"], r["port_terminal"]) for r in rows.values())
    assert len(pairs) == len(names) and len({p for pair in pairs for p in pair}) == 2 * len(names)
    for container in containers:
        row = rows[container.name]
        assert container.ports == (row["port_chrome"], row["port_terminal"]), f"seed {seed}"
    assert stack.db.rows("SELECT COUNT(*) FROM instances_instance") == [(len(names),)]
    unfinished = stack.db.rows(
        "SELECT name FROM instances_instance WHERE generation <> observed_generation")
    assert unfinished == [], f"seed {seed}"
