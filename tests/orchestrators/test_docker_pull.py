"""Image pulls by the Docker backend: progress summed over layers, and errors that name the
cause. The daemon is real; the registry is the throttled one of tests/registry_support.py."""

import pytest

from orchestrators.base import PullError, RegistryAuth, registry_of
from orchestrators.docker import DockerOrchestrator, PullTally, pull_error


def events(*items):
    return [dict(zip(("status", "id", "progressDetail"), item, strict=False)) for item in items]


def test_tally_sums_layers_and_knows_done_layers():
    tally = PullTally()
    for event in events(
        ("Pulling from x", "v1"),
        ("Already exists", "aaa", {}),
        ("Pulling fs layer", "bbb", {}),
        ("Pulling fs layer", "ccc", {}),
        ("Downloading", "bbb", {"current": 100, "total": 400}),
        ("Downloading", "ccc", {"current": 50, "total": 600}),
    ):
        tally.feed(event)
    progress = tally.progress()
    assert (progress.bytes_done, progress.bytes_total) == (150, 1000)
    assert (progress.layers_done, progress.layers_total) == (1, 3)
    assert progress.percent == 15 and progress.phase == "Downloading"
    for event in events(("Download complete", "bbb", {}), ("Pull complete", "bbb", {}),
                        ("Downloading", "ccc", {"current": 600, "total": 600}),
                        ("Pull complete", "ccc", {})):
        tally.feed(event)
    tally.feed({"status": "Digest: sha256:abc"})
    progress = tally.progress()
    assert (progress.bytes_done, progress.bytes_total, progress.percent) == (1000, 1000, 100)
    assert (progress.layers_done, progress.layers_total) == (3, 3)
    assert tally.digest == "sha256:abc"


def test_tally_keeps_the_daemons_error():
    tally = PullTally()
    tally.feed({"errorDetail": {"message": "write /var/lib: no space left on device"},
                "error": "write /var/lib: no space left on device"})
    assert "no space left" in tally.error


@pytest.mark.parametrize(("said", "cause", "words"), [
    ('manifest for 127.0.0.1:5/x:y not found: manifest unknown', "not_found", "no such image"),
    ('Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused',
     "unreachable", "unreachable"),
    ("Head https://r/v2/x/manifests/y: unauthorized: authentication required",
     "unauthorized", "credentials"),
    ("failed to register layer: write /x: no space left on device", "disk_full", "disk is full"),
    ("something else entirely", "failed", "something else entirely"),
])
def test_pull_errors_name_the_cause(said, cause, words):
    error = pull_error("r/x:y", said)
    assert error.cause == cause
    assert str(error).startswith("Could not pull r/x:y: ") and words in str(error)


def test_registry_of():
    assert registry_of("glukw/openclaw-vnc-chrome:latest") == "docker.io"
    assert registry_of("ubuntu") == "docker.io"
    assert registry_of("127.0.0.1:5000/a/b:c") == "127.0.0.1:5000"
    assert registry_of("ghcr.io/o/i") == "ghcr.io"
    assert registry_of("localhost/i:1") == "localhost"


# --- against the daemon --------------------------------------------------------------------------

@pytest.fixture
def orch(docker_client, tmp_path):
    return DockerOrchestrator(config_dir=str(tmp_path), privileged=False, init=True)


@pytest.mark.docker
@pytest.mark.slow
def test_pull_reports_progress_summed_over_layers(orch, test_registry, served_images):
    served = served_images(600_000)
    test_registry.rate = 150_000  # a few seconds: several progress reports on the way
    ref = test_registry.add("claworc-pull", "progress", served)
    assert orch.local_image(ref) is None
    seen = []

    digest = orch.pull(ref, on_progress=seen.append)

    assert digest == served.digest
    assert orch.local_image(ref) == orch.image_digest(ref) == served.digest
    sized = [p for p in seen if p.bytes_total]
    assert sized, "no progress with sizes was reported"
    # Bytes grow as the layers arrive, and the last report has every layer done.
    done = [p.bytes_done for p in sized]
    assert done == sorted(done) or max(done) == done[-1]
    assert any(0 < (p.percent or 0) < 100 for p in sized), [p.percent for p in sized]
    last = seen[-1]
    assert last.layers_done == last.layers_total == len(
        [b for b in served.blobs if b != served.config_digest])
    assert last.bytes_done == last.bytes_total >= 600_000
    # No blob crossed the wire twice (layers the daemon holds already are not fetched at all).
    gets = test_registry.blob_gets()
    assert gets and len(gets) == len(set(gets))


@pytest.mark.docker
def test_pull_of_a_missing_tag_says_not_found(orch, test_registry, served_images):
    test_registry.add("claworc-pull", "there", served_images())
    with pytest.raises(PullError) as caught:
        orch.pull(test_registry.ref("claworc-pull", "not-there"))
    assert caught.value.cause == "not_found"
    assert "no such image or tag" in str(caught.value)


@pytest.mark.docker
def test_pull_from_an_unreachable_registry_says_unreachable(orch):
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused.
    with pytest.raises(PullError) as caught:
        orch.pull("127.0.0.1:9/claworc-pull:any")
    assert caught.value.cause == "unreachable"
    assert "the registry is unreachable" in str(caught.value)


@pytest.mark.docker
def test_private_registry_needs_its_credentials(orch, test_registry, served_images):
    test_registry.credentials = ("robot", "s3cret-pull-password")
    ref = test_registry.add("claworc-private", "v1", served_images())
    with pytest.raises(PullError) as caught:
        orch.pull(ref)
    assert caught.value.cause == "unauthorized"
    assert "s3cret" not in str(caught.value)
    with pytest.raises(PullError) as caught:
        orch.pull(ref, auth=RegistryAuth("robot", "wrong-password"))
    assert caught.value.cause == "unauthorized"

    assert orch.resolve_digest(ref, auth=RegistryAuth("robot", "s3cret-pull-password")) == (
        test_registry.images["claworc-private"]["v1"].digest)
    orch.pull(ref, auth=RegistryAuth("robot", "s3cret-pull-password"))
    assert orch.local_image(ref) is not None


@pytest.mark.docker
@pytest.mark.slow
def test_a_pull_whose_worker_was_killed_goes_on_and_is_joined(orch, test_registry, served_images):
    """SIGKILL of the pulling process mid-download: the next pull downloads no layer twice."""
    import os
    import signal
    import subprocess
    import sys

    served = served_images(900_000, "resume")
    test_registry.rate = 150_000
    ref = test_registry.add("claworc-pull", "resume", served)
    script = (
        "import sys\n"
        "from orchestrators.docker import DockerOrchestrator\n"
        "o = DockerOrchestrator(config_dir='/tmp', privileged=False)\n"
        "o.pull(sys.argv[1], on_progress=lambda p: print(p.bytes_done, flush=True))\n")
    worker = subprocess.Popen([sys.executable, "-c", script, ref], stdout=subprocess.PIPE,
                              text=True, cwd=os.getcwd())
    try:
        for line in worker.stdout:
            if int(line) > 100_000:
                break
        os.kill(worker.pid, signal.SIGKILL)  # as the OOM killer would
    finally:
        worker.wait(timeout=30)
    seen = []
    assert orch.pull(ref, on_progress=seen.append) == served.digest
    layers = [g for g in test_registry.blob_gets() if not g.endswith(served.config_digest)]
    assert layers and len(layers) == len(set(layers)), layers
    # The joined pull reported the download where it was, not from zero.
    assert seen and max(p.bytes_done for p in seen) >= 900_000
