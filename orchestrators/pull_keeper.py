"""Runs one image pull on the Docker daemon, apart from the worker that asked for it.

The daemon cancels a pull, and drops what it downloaded, when the client that asked for it goes
away. A worker killed mid-pull (OOM, a deploy) would lose a multi-gigabyte download that way. So
`DockerOrchestrator.pull()` runs the pull in this small process, in its own session, and reads
the daemon's events from its standard output. If the worker dies, this process carries on until
the pull ends or its time limit passes, and the next pull of the image joins the download where
it is (the daemon shares one download between the clients pulling the same layers).

Reads one JSON object on stdin: image, tag, base_url, auth (or null), timeout (seconds); the
credentials never appear on a command line or in the environment. Writes one JSON object per
line: the daemon's events, or {"refused": ...} (the daemon refused the pull: registry errors) or
{"unavailable": ...} (no daemon).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def main() -> int:
    # Our reader may die: keep pulling with nobody listening rather than die of SIGPIPE.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    job = json.loads(sys.stdin.readline())
    out = sys.stdout
    listening = True

    def say(obj) -> None:
        nonlocal listening
        if not listening:
            return
        try:
            out.write(json.dumps(obj) + "\n")
            out.flush()
        except OSError:
            listening = False
            # Nobody reads any more: send further output nowhere instead of raising again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())

    import docker.errors
    import requests.exceptions

    import docker

    try:
        if job.get("base_url"):
            client = docker.DockerClient(base_url=job["base_url"], timeout=60)
        else:
            client = docker.from_env(timeout=60)
        deadline = time.monotonic() + float(job["timeout"])
        for event in client.api.pull(job["image"], tag=job["tag"], stream=True, decode=True,
                                     auth_config=job.get("auth")):
            say(event)
            if time.monotonic() > deadline:
                return 2  # closing the stream lets the daemon cancel the pull
    except docker.errors.APIError as exc:
        say({"refused": str(exc.explanation or exc)})
        return 1
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        say({"unavailable": str(exc) or type(exc).__name__})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
