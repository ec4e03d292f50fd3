"""The config file is observed state, end to end: a `clawdbot.json` deleted or edited on the
Docker host, or a container that cannot restart because the file is gone, is repaired by the
periodic reconcile_all within an interval or two, with nobody clicking anything."""

import shutil

import pytest

from tests.integration.support import Admin, docker_objects, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.worker, pytest.mark.slow]

RECONCILE_INTERVAL = 2


def _budget() -> float:
    """Two reconcile intervals (the beat that sees it, and one more if it ran just before the
    change) plus one converge on a loaded machine (rewrite, restart: ~1 s idle)."""
    return 2 * RECONCILE_INTERVAL + 30


def test_a_config_file_deleted_edited_or_missing_at_restart_is_repaired_by_reconcile_all(
        make_stack, docker_client):
    stack = make_stack(broker="sqla", reconcile_interval=RECONCILE_INTERVAL)
    stack.start_web()
    stack.start_worker(beat=True)
    admin = Admin(stack.base_url)
    admin.login()
    name = stack.name("cfg")
    admin.add_instance(name)
    stack.wait_running(docker_client, name, timeout=90)
    path = stack.config_dir / name / "clawdbot.json"
    original = path.read_text()

    def started_at() -> str:
        return docker_client.api.inspect_container(name)["State"]["StartedAt"]

    def repaired_since(before: str):
        def check():
            row = stack.db.instance(name)
            return (path.exists() and path.read_text() == original and row["status"] == "running"
                    and started_at() != before)
        return check

    def drift_messages() -> list[str]:
        return [m for action, _, _, m in stack.db.activities(name) if action == "drift"]

    # Deleted on the host.
    before = started_at()
    path.unlink()
    wait_for("the deleted config file to be rewritten and mounted", repaired_since(before),
             timeout=_budget())
    assert drift_messages() == [
        f"The config of {name} was deleted outside Claworc; rewriting it from the spec."]
    # The container mounts the rewritten file, not the deleted one.
    assert docker_client.containers.get(name).exec_run(
        ["cat", "/etc/clawdbot/clawdbot.json"]).output.decode() == original

    # Edited on the host.
    before = started_at()
    path.write_text(original.replace("{", '{"edited": "by hand",', 1))
    wait_for("the edited config file to be rewritten and mounted", repaired_since(before),
             timeout=_budget())
    assert drift_messages()[1:] == [
        f"The config of {name} was changed outside Claworc; rewriting it from the spec."]

    # Gone when the agent crashes: Docker's restart policy cannot start it again ("error
    # mounting … no such file or directory", an empty log). Seen as the missing file's doing
    # and repaired, not left as a crash for a person to read empty logs about. (A beat may also
    # see the file missing just before the crash: either way it is rewritten.)
    before = started_at()
    shutil.rmtree(path.parent)
    docker_client.containers.get(name).exec_run(["sh", "-c", "kill -SEGV $(pidof httpd)"])
    wait_for("the instance to run again with its config file", repaired_since(before),
             timeout=_budget())
    assert len(drift_messages()) == 3
    assert drift_messages()[2] in (
        f"The config of {name} was deleted outside Claworc; rewriting it from the spec.",
        f"{name} exited with code 139 and cannot start again: its config file is missing "
        "(deleted outside Claworc). Rewriting it and starting it.")
    assert [a for a in stack.db.activities(name) if a[1] == "error"] == []
    containers, volumes = docker_objects(docker_client, name)
    assert [(c.name, c.state) for c in containers] == [(name, "running")]
    assert len(volumes) == 4
