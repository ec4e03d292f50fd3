"""Following a log on Kubernetes: the official client's follow=true stream, read as it comes.

The emulator (tests/kube_support.py) streams a pod's log as kube-apiserver does: headers at
once, then a chunk each time the container writes, until the pod is deleted or the client goes
away. Every test goes through the real client over HTTP.
"""

import asyncio
import threading
import time

import pytest

from orchestrators.base import InstanceSpec, TransientError
from orchestrators.kubernetes import KubernetesOrchestrator
from orchestrators.streams import FollowedLog
from tests import kube_support

kube_api = kube_support.kube_api
NS = "claworc"
NAME = "bot-follow"
TIMEOUT = 5  # the orchestrator's per-call timeout in these tests
#: A follow long enough that no test below ends by its deadline unless it means to.
LONG = 60


@pytest.fixture
def orch(kube_api):
    return KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS,
                                  timeout=TIMEOUT)


@pytest.fixture
def pod(kube_api, orch):
    spec = InstanceSpec(name=NAME, image="agent:1", port_chrome=30100, port_terminal=30101)
    orch.ensure(spec)
    [pod] = kube_api.controller.settle(NAME)
    name = pod["metadata"]["name"]
    kube_api.set_logs(name, "".join(f"boot {i}\n" for i in range(10)))
    return name


def wait_until(what, check, timeout):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def read_in_thread(stream):
    """Read the whole stream in a thread; returns (chunks, finished event)."""
    chunks, done = [], threading.Event()

    def run():
        try:
            chunks.extend(stream)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return chunks, done


def test_a_line_written_after_the_follow_opened_arrives(kube_api, orch, pod):
    stream = orch.follow_logs(NAME, lines=3, seconds=LONG)
    try:
        # The last `lines` lines first ...
        assert next(stream) == "boot 7\nboot 8\nboot 9\n"
        # ... then what the container writes once the connection is open.
        wait_until("the stream to be open", lambda: kube_api.open_log_follows() == 1, TIMEOUT)
        kube_api.append_logs(pod, "written after the page opened\n")
        got = ""
        while "written after" not in got:
            got += next(stream)
        assert got == "written after the page opened\n"
    finally:
        stream.close()
    [(_, path, query)] = [r for r in kube_api.requests() if r[1].endswith("/log")]
    assert path.endswith(f"/pods/{pod}/log")
    assert query == {"container": "agent", "follow": "true", "tailLines": "3"}
    wait_until("the stream to be closed", lambda: kube_api.open_log_follows() == 0, TIMEOUT)


def test_a_character_split_across_chunks_arrives_whole():
    closed = []
    stream = FollowedLog(iter(["café ✓\n".encode()[:-3], "café ✓\n".encode()[-3:]]), LONG,
                         lambda: closed.append(True))
    assert "".join(stream) == "café ✓\n"
    assert closed == [True]  # the source is released when it ends, once


def test_the_follow_ends_at_its_time_limit_and_closes_the_connection(kube_api, orch, pod):
    seconds = 1.0
    started = time.monotonic()
    chunks, done = read_in_thread(orch.follow_logs(NAME, lines=2, seconds=seconds))
    # Nothing new is written: only the deadline can end it, and it must.
    assert done.wait(seconds + TIMEOUT)
    assert time.monotonic() - started >= seconds
    assert "".join(chunks) == "boot 8\nboot 9\n"
    wait_until("the stream to be closed", lambda: kube_api.open_log_follows() == 0, TIMEOUT)


def test_closing_from_another_thread_ends_a_waiting_follow_at_once(kube_api, orch, pod):
    stream = orch.follow_logs(NAME, lines=1, seconds=LONG)
    chunks, done = read_in_thread(stream)
    wait_until("the tail", lambda: chunks == ["boot 9\n"], TIMEOUT)
    # The reader is blocked waiting for a line that never comes; the page goes away.
    stream.close()
    assert done.wait(TIMEOUT), "the reader still waits after close()"
    wait_until("the stream to be closed", lambda: kube_api.open_log_follows() == 0, TIMEOUT)


def test_the_follow_ends_when_the_pod_is_replaced(kube_api, orch, pod):
    chunks, done = read_in_thread(orch.follow_logs(NAME, lines=1, seconds=LONG))
    wait_until("the stream to be open", lambda: kube_api.open_log_follows() == 1, TIMEOUT)
    kube_api.controller.delete_pods(NAME)  # a restart or recreate replaces it
    assert done.wait(TIMEOUT), "the follow outlived its pod"
    assert "".join(chunks) == "boot 9\n"


def test_the_page_going_away_closes_the_stream(kube_api, orch, pod):
    """Under ASGI the server cancels the response when the browser leaves: the backend's
    stream is closed then, not when a thread waiting on it sees a next line."""
    from instances import controls

    async def leave_after_the_tail():
        got = []

        async def consume():
            async for chunk in controls._async_chunks(orch.follow_logs(NAME, lines=1,
                                                                        seconds=LONG)):
                got.append(chunk)

        task = asyncio.ensure_future(consume())
        deadline = time.monotonic() + TIMEOUT
        while got != ["", "boot 9\n"]:
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(leave_after_the_tail())
    wait_until("the stream to be closed", lambda: kube_api.open_log_follows() == 0, TIMEOUT)


def test_nothing_to_follow_without_a_running_pod(kube_api, orch):
    assert list(orch.follow_logs(NAME, lines=5, seconds=LONG)) == []  # no Deployment, no pod
    orch.ensure(InstanceSpec(name=NAME, image="agent:1", port_chrome=30100, port_terminal=30101))
    kube_api.controller.settle(NAME, "creating")
    kube_api.inject("GET", "/log", 400,
                    message='container "agent" in pod is waiting to start: ContainerCreating')
    assert list(orch.follow_logs(NAME, lines=5, seconds=LONG)) == []


def test_an_unreachable_api_is_said_before_anything_streams(kube_api, orch, pod):
    kube_api.inject("GET", "/log", 503, message="etcd leader changed")
    with pytest.raises(TransientError, match="follow the logs of Pod"):
        orch.follow_logs(NAME, lines=5, seconds=LONG)


def test_support_a_plain_read_still_answers_once(kube_api, orch, pod):
    """The emulator's follow mode does not change what a plain read answers."""
    assert orch.logs(NAME, lines=2) == "boot 8\nboot 9\n"
    assert kube_api.open_log_follows() == 0


@pytest.mark.parametrize("seconds", [0.5])
def test_the_deadline_holds_while_lines_keep_coming(kube_api, orch, pod, seconds):
    """A chatty container does not keep a follow open past its limit."""
    stop = threading.Event()

    def chatter():
        i = 0
        while not stop.is_set():
            kube_api.append_logs(pod, f"chat {i}\n")
            i += 1
            time.sleep(0.01)

    threading.Thread(target=chatter, daemon=True).start()
    try:
        started = time.monotonic()
        chunks, done = read_in_thread(orch.follow_logs(NAME, lines=1, seconds=seconds))
        assert done.wait(seconds + TIMEOUT)
        assert time.monotonic() - started < seconds + TIMEOUT
        assert any("chat" in c for c in chunks)
    finally:
        stop.set()
    wait_until("the stream to be closed", lambda: kube_api.open_log_follows() == 0, TIMEOUT)
