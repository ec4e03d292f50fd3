"""End to end: changing two running instances' image to one the host must pull from a slow
registry. A real worker with a 10 s task time limit, the real daemon, the admin over HTTP.

The bot keeps answering during the whole pull; the only outage is the recreate at the end. The
pull takes longer than the task time limit and finishes anyway, and its progress shows in the
admin and on the status page while it runs.
"""

import re
import threading
import time

import pytest

from tests.integration.support import Admin, port_answers, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.worker, pytest.mark.slow, pytest.mark.redis]

TASK_TIME_LIMIT = 10  # the stack's CLAWORC_TASK_TIME_LIMIT; the payload is sized on it
PAYLOAD = 1_600_000
RATE = 60_000  # bytes/s: the payload alone takes about 27 s, well over the task limit


class Poller(threading.Thread):
    """Asks the bot's Chrome port for its page every 0.1 s, noting when it did not answer."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.samples, self.done = port, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            self.samples.append((time.monotonic(), port_answers(self.port)))
            time.sleep(0.1)

    def longest_outage(self) -> float:
        longest, down_since = 0.0, None
        for at, body in self.samples:
            if "chrome vnc" in body:
                if down_since is not None:
                    longest = max(longest, at - down_since)
                down_since = None
            elif down_since is None:
                down_since = at
        if down_since is not None:  # still down at the last sample
            longest = max(longest, self.samples[-1][0] - down_since)
        return longest


def test_image_change_pulls_first_with_progress_and_replaces_quickly(
        make_stack, docker_client, test_registry, served_images):
    stack = make_stack(broker="redis", extra_env={
        "CLAWORC_PULL_TIMEOUT": "300", "CLAWORC_TASK_TIME_LIMIT": str(TASK_TIME_LIMIT)})
    stack.start_web()
    stack.start_worker()
    admin = Admin(stack.base_url)
    admin.login()
    name, other = stack.name("pull"), stack.name("pull-b")
    admin.add_instance(name)
    admin.add_instance(other)
    row = stack.wait_running(docker_client, name, timeout=60)
    other_row = stack.wait_running(docker_client, other, timeout=60)
    served = served_images(PAYLOAD, "e2e")
    test_registry.rate = RATE
    new_image = test_registry.add("claworc-e2e", "v2", served)
    expected_pull = served.layer_bytes / RATE
    poller = Poller(row["port_chrome"])
    poller.start()

    admin.change_instance(row["id"], image=new_image)
    admin.change_instance(other_row["id"], image=new_image)
    wait_for("the pulling state", lambda: stack.db.instance(name)["status"] == "pulling"
             and stack.db.instance(other)["status"] == "pulling", timeout=60)
    pulling_since = time.monotonic()

    # While it pulls: the old container answers, and both pages show how far the pull is.
    percent = re.compile(r"Pulling image (\d+)% \(")

    def progress_shown():
        admin_page = admin.http.get(f"{stack.base_url}/admin/instances/instance/",
                                    timeout=30).text
        status_page = admin.http.get(f"{stack.base_url}/", timeout=30).text
        shown = [percent.search(admin_page), percent.search(status_page)]
        if all(shown) and all(0 < int(m.group(1)) < 100 for m in shown):
            return [int(m.group(1)) for m in shown]
        return None

    seen = wait_for("pull progress in the admin and on the status page", progress_shown,
                    timeout=expected_pull * 3 + 30, interval=0.5)
    assert "chrome vnc" in port_answers(row["port_chrome"]), "the bot went down during the pull"
    assert docker_client.containers.get(name).status == "running"

    def replaced():
        return served.digest and "1600000-e2e" in port_answers(row["port_chrome"])

    wait_for("the new image to serve", replaced, timeout=expected_pull * 4 + 60, interval=0.2)
    pulled_in = time.monotonic() - pulling_since
    wait_for("the poller to see it too", lambda: "e2e" in poller.samples[-1][1], timeout=30)
    poller.done.set()
    poller.join()
    outage = poller.longest_outage()

    assert pulled_in > TASK_TIME_LIMIT, f"the pull took only {pulled_in:.1f} s"
    # Downtime is that of a recreate, not of the pull.
    assert outage < min(10.0, pulled_in / 2), (
        f"the bot was down {outage:.1f} s (the pull took {pulled_in:.1f} s); seen {seen}")
    # The digest the workload runs is written just after its status: wait for both.
    final = wait_for("running on the new digest", lambda: (
        r := stack.db.instance(name))["status"] == "running" and stack.db.rows(
        "SELECT running_digest FROM instances_instance WHERE name = %s",
        (name,))[0][0] == served.digest and r, timeout=stack.step_budget())
    assert final["port_chrome"] == row["port_chrome"]
    state, attempts, pulled = stack.db.rows(
        "SELECT state, attempts, bytes_done FROM instances_imagepull WHERE image = %s",
        (new_image,))[0]
    # Two instances waited for the image: one pull, each blob downloaded once.
    assert (state, attempts) == ("done", 1) and pulled >= PAYLOAD
    gets = test_registry.blob_gets()
    assert len(gets) == len(set(gets)), "a blob was downloaded twice"
    wait_for(f"{other} on the new image", lambda: "1600000-e2e" in port_answers(
        other_row["port_chrome"]), timeout=60)
    print(f"pull {pulled_in:.1f} s, longest outage {outage:.2f} s, progress seen {seen}")
