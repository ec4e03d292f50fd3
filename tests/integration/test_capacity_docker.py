"""The capacity budget on the real daemon, through the admin of a running stack with a real worker.

The budget is sized to hold exactly two stand-in instances (500m CPU, 4Gi memory limit each: a
host of 1 CPU and 8 GiB) by writing the record detection keeps, as if the daemon had reported
that host; the stand-ins themselves use next to nothing.
"""

import json

import pytest

from tests.integration.support import HTTP_TIMEOUT, Admin, form_fields, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.worker, pytest.mark.slow, pytest.mark.redis]

GIB = 2**30
FULL = "needs 0.5 CPU / 4 GiB; 0 CPU / 0 GiB free of 1 CPU / 8 GiB; 2 instances running"


def size_budget(stack, cpus: int, memory_gib: int) -> None:
    record = json.dumps({
        "backend": "docker", "totals": {"requests.cpu": str(cpus),
                                        "limits.memory": str(memory_gib * GIB)},
        "others": {}, "per_instance_max": {"cpu": "2"}, "host": True, "source": "docker info"})
    stack.db.execute("DELETE FROM instances_setting WHERE key = %s", ("host_capacity",))
    stack.db.execute("INSERT INTO instances_setting (key, value, updated_at) "
                     "VALUES (%s, %s, CURRENT_TIMESTAMP)", ("host_capacity", record))


def post_form(admin: Admin, path: str, **changes: str) -> str:
    """Fill in an admin form as a person would and save it; the page that comes back."""
    url = f"{admin.base}{path}"
    page = admin.http.get(url, timeout=HTTP_TIMEOUT)
    page.raise_for_status()
    data = dict(form_fields(page.text, "instance_form"))
    data.update(changes, _save="Save")
    reply = admin.http.post(url, data=data, timeout=HTTP_TIMEOUT, headers={"Referer": url})
    reply.raise_for_status()
    return reply.text


def containers(docker_client, name: str) -> list:
    return [c for c in docker_client.containers.list(all=True, filters={"name": name})
            if c.name == name]


def test_a_budget_for_two_refuses_the_third_create_start_and_resize(make_stack, docker_client):
    stack = make_stack(broker="redis", extra_env={
        "CLAWORC_CPU_OVERCOMMIT": "1.0", "CLAWORC_MEMORY_OVERCOMMIT": "1.0"})
    stack.start_web()
    stack.start_worker()
    size_budget(stack, cpus=1, memory_gib=8)
    admin = Admin(stack.base_url)
    admin.login()

    # Two fit; the third create is refused on its field, with the numbers, and nothing is made.
    first, second, third = (stack.name(s) for s in ("cap-a", "cap-b", "cap-c"))
    admin.add_instance(first)
    admin.add_instance(second)
    rows = [stack.wait_running(docker_client, n, timeout=120) for n in (first, second)]
    page = post_form(admin, "/admin/instances/instance/add/", display_name=third)
    assert "was added successfully" not in page
    assert f"Not enough capacity for {third}: {FULL}. Nothing was changed." in page
    assert stack.db.instance(third) is None
    assert containers(docker_client, third) == []
    assert not docker_client.volumes.list(filters={"name": f"claworc-{third}-"})

    # Stopped, they hold nothing: five created stopped, then started at once: two start.
    said = admin.action("stop_instances", [r["id"] for r in rows])
    assert "Queued stop of 2 instances" in said
    for name in (first, second):
        wait_for(f"{name} to stop", lambda n=name: stack.db.instance(n)["status"] == "stopped",
                 timeout=120)
    five = [stack.name(f"cap-s{i}") for i in range(5)]
    for name in five:
        admin.add_instance(name, desired_state="stopped")
    ids = [stack.db.instance(n)["id"] for n in five]
    said = admin.action("start_instances", ids)
    assert f"Queued start of 2 instances: {five[0]}, {five[1]}." in said, said
    for name in five[2:]:
        assert f"{name} (not enough capacity: {FULL})" in said, said
    started = [stack.wait_running(docker_client, n, timeout=120) for n in five[:2]]
    for name in five[2:]:
        assert stack.db.instance(name)["desired_state"] == "stopped"
        assert containers(docker_client, name) == []  # created stopped: nothing was made

    # A resize over budget is refused on the field; the bot keeps running, untouched.
    [before] = containers(docker_client, five[0])
    page = post_form(admin, f"/admin/instances/instance/{started[0]['id']}/change/",
                     memory_limit="6Gi")
    assert "was changed successfully" not in page
    assert (f"Not enough capacity for {five[0]}: needs 0.5 CPU / 6 GiB; 0.5 CPU / 4 GiB free "
            "of 1 CPU / 8 GiB; 1 instance running. Nothing was changed.") in page
    assert stack.db.rows("SELECT memory_limit FROM instances_instance WHERE name = %s",
                         (five[0],)) == [("4Gi",)]
    [after] = containers(docker_client, five[0])
    after.reload()
    assert (after.id, after.status) == (before.id, "running")
    assert after.attrs["HostConfig"]["Memory"] == 4 * GIB


@pytest.mark.django_db
def test_detection_records_the_hosts_cpus_and_memory(docker_client, no_cluster):
    from instances.services import capacity
    from orchestrators import registry

    assert registry.detect(persist=True).backend == "docker"
    info = docker_client.info()
    found = registry.recorded_capacity()
    assert found.totals == {"requests.cpu": info["NCPU"], "limits.memory": info["MemTotal"]}
    assert found.host and registry.host_cpus() == info["NCPU"]
    assert capacity.budget().totals == found.totals  # overcommit 1.0: the host as it is
