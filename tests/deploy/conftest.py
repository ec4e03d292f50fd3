"""The dashboard image, built on a locally made Debian base (no image can be pulled here)."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import need_service

REPO = Path(__file__).resolve().parents[2]
#: Cached between runs: scripts/build-base-image.sh skips the debootstrap when it exists.
BASE_IMAGE = "claworc-base:bookworm"
DOCKER_SOCKET = "/var/run/docker.sock"


def _run(cmd: list[str], timeout: int) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}",
            pytrace=False,
        )
    return done


@pytest.fixture(scope="session")
def base_image(docker_client):
    need_service("debootstrap", bool(shutil.which("debootstrap")) and os.geteuid() == 0,
                 "the base image is made with debootstrap, as root")
    _run(["bash", "scripts/build-base-image.sh", BASE_IMAGE], timeout=1200)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def dashboard_image(docker_client, base_image):
    """The repository's Dockerfile built on the local base; its tag is removed afterwards.

    The build cache (its intermediate layers) is kept, like the base, so the next run is quick.
    """
    need_service("Docker socket", os.path.exists(DOCKER_SOCKET), DOCKER_SOCKET)
    tag = f"claworc-dashboard-t8:{uuid.uuid4().hex[:8]}"
    _run(["docker", "build", "--build-arg", f"BASE_IMAGE={base_image}", "-t", tag, "."],
         timeout=1200)
    yield tag
    import docker.errors

    try:
        docker_client.images.remove(tag, noprune=True)
    except docker.errors.APIError:
        pass
