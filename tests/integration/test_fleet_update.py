"""End to end: "Update image" for a fleet whose tag moved in the registry, on the real daemon
with a real worker: the first create pulls, then one pull for the update, recreates in batches,
and the rollout stops at the first instance that fails, leaving the later batches untouched."""

import pytest

from tests.integration.support import Admin, port_answers, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.worker, pytest.mark.slow, pytest.mark.redis]


def test_fleet_update_runs_in_batches_and_stops_at_the_first_failure(
        make_stack, docker_client, test_registry, served_images):
    v1, v2 = served_images(200_000, "fleet1"), served_images(200_000, "fleet2")
    test_registry.rate = 2_000_000
    image = test_registry.add("claworc-fleet", "latest", v1)
    stack = make_stack(broker="redis", extra_env={"CLAWORC_AGENT_IMAGE": image})
    stack.start_web()
    stack.start_worker()
    admin = Admin(stack.base_url)
    admin.login()
    names = [stack.name(f"fleet-{i}") for i in range(5)]
    for name in names:
        admin.add_instance(name)
    # The first create pulls the image (the host never had it) and then runs it.
    rows = [stack.wait_running(docker_client, name, timeout=120) for name in names]
    for row in rows:
        assert "200000-fleet1" in port_answers(row["port_chrome"])
    assert stack.db.rows("SELECT COUNT(*), MAX(attempts) FROM instances_imagepull") == [(1, 1)]
    # The digest is written just after the status that wait_running saw.
    wait_for("the running digests", lambda: {r[0] for r in stack.db.rows(
        "SELECT running_digest FROM instances_instance")} == {v1.digest},
        timeout=stack.step_budget())

    # The tag moves; one instance now asks for more CPUs than the host has, so its recreate
    # fails, as a bad spec would.
    test_registry.images["claworc-fleet"]["latest"] = v2
    stack.db.execute("UPDATE instances_instance SET cpu_limit = '64' WHERE name = %s",
                     (names[3],))
    said = admin.action("update_image_fleet", [rows[0]["id"]], confirm="yes", batch_size="2")
    assert "5 instance(s) in batches of 2" in said

    def ended():
        found = stack.db.rows("SELECT state, message, digest FROM instances_rollout")
        return found[0] if found and found[0][0] in ("done", "failed") else None

    state, message, digest = wait_for("the rollout to end", ended, timeout=180, interval=0.5)
    assert (state, digest) == ("failed", v2.digest), message
    assert message.startswith(f"Stopped at batch 2: {names[3]} failed: "), message
    assert "CPU" in message, message
    steps = dict(stack.db.rows("SELECT instance_name, state FROM instances_rolloutstep"))
    assert steps == {names[0]: "done", names[1]: "done", names[2]: "done",
                     names[3]: "failed", names[4]: "skipped"}
    for row in rows[:3]:
        assert "200000-fleet2" in port_answers(row["port_chrome"])
    assert "200000-fleet1" in port_answers(rows[4]["port_chrome"])  # never touched
    digests = dict(stack.db.rows("SELECT name, running_digest FROM instances_instance"))
    assert [digests[n] for n in names[:3]] == [v2.digest] * 3 and digests[names[4]] == v1.digest
    # The rollout's page shows it all.
    rollout_id = stack.db.rows("SELECT id FROM instances_rollout")[0][0]
    page = admin.http.get(f"{stack.base_url}/admin/instances/rollout/{rollout_id}/change/",
                          timeout=30).text
    assert "3 of 5 instance(s)" in page and names[3] in page and "Stopped at batch 2" in page
    # Each layer crossed the wire once (resolving the digest reads the small config blob too).
    configs = {v1.config_digest, v2.config_digest}
    gets = [g for g in test_registry.blob_gets() if g.rsplit("/", 1)[1] not in configs]
    assert len(gets) == len(set(gets)), "a layer was downloaded twice"
