"""What the Docker backend costs over plain Docker SDK calls, on the real daemon.

    .venv/bin/python benchmarks/bench_docker.py [--n N] [--fleet 200] [--start-fleet]

1. Creates N instances through DockerOrchestrator.ensure and N identical containers through
   plain SDK calls (4 volumes, container create, start), alternating which goes first, and
   prints the median of the per-pair time ratios (goal <= 1.10).
2. Creates a fleet of managed containers (200 by default) and times status_all() against one
   raw labeled list call, alternating, and prints both medians and their ratio.

Everything is named bench-<token>-… and uses host ports 31400-31999; all of it is removed at
the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker.errors  # noqa: E402

from orchestrators.base import LABEL_MANAGED_BY, MANAGED_BY_VALUE, InstanceSpec  # noqa: E402
from orchestrators.docker import (  # noqa: E402
    DockerOrchestrator,
    config_bytes,
    config_path,
    container_create_kwargs,
    observed_from_list,
    volume_names,
)
from tests.docker_support import build_agent_image  # noqa: E402

PORT_LOW, PORT_HIGH = 31400, 31999


class Bench:
    def __init__(self, client: docker.DockerClient, image: str) -> None:
        self.client = client
        self.image = image
        self.token = secrets.token_hex(3)
        self.config_dir = tempfile.mkdtemp(prefix="claworc-bench-configs-")
        self.names: list[str] = []
        self.next_port = PORT_LOW
        self.orch = DockerOrchestrator(config_dir=self.config_dir, privileged=False, init=True,
                                       client=client)

    def spec(self, kind: str, index: int, *, ports: bool = True) -> InstanceSpec:
        name = f"bench-{self.token}-{kind}{index}"
        self.names.append(name)
        chrome = 0
        if ports:
            if self.next_port + 1 > PORT_HIGH:
                raise SystemExit("ran out of ports in 31400-31999; use a smaller --n")
            chrome, self.next_port = self.next_port, self.next_port + 2
        return InstanceSpec(
            name=name, image=self.image, port_chrome=chrome, port_terminal=chrome + 1,
            env={"ANTHROPIC_API_KEY": "sk-ant-bench"}, config={"bench": index},
            privileged=False,
        )

    def plain_sdk(self, spec: InstanceSpec, *, start: bool = True) -> None:
        """The same container by hand: config file, volumes, create, start."""
        path = config_path(self.config_dir, spec.name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(config_bytes(spec.config))
        for volume in volume_names(spec.name).values():
            self.client.volumes.create(name=volume, labels=spec.labels())
        kwargs = container_create_kwargs(spec, path, privileged=False, init=True)
        if not spec.port_chrome:
            del kwargs["ports"]
        container = self.client.containers.create(**kwargs)
        if start:
            container.start()

    def cleanup(self) -> None:
        for name in self.names:
            with contextlib.suppress(docker.errors.NotFound):
                self.client.api.remove_container(name, force=True)
            for volume in volume_names(name).values():
                with contextlib.suppress(docker.errors.NotFound):
                    self.client.api.remove_volume(volume, force=True)
        shutil.rmtree(self.config_dir, ignore_errors=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_create(bench: Bench, n: int) -> None:
    ours, plain, ratios = [], [], []
    for i in range(n):
        a, b = bench.spec("o", i), bench.spec("p", i)
        if i % 2 == 0:
            t_ours = timed(lambda: bench.orch.ensure(a))  # noqa: B023 - called right away
            t_plain = timed(lambda: bench.plain_sdk(b))  # noqa: B023
        else:
            t_plain = timed(lambda: bench.plain_sdk(b))  # noqa: B023
            t_ours = timed(lambda: bench.orch.ensure(a))  # noqa: B023
        ours.append(t_ours)
        plain.append(t_plain)
        ratios.append(t_ours / t_plain)
    print(f"create {n} instances: ensure median {statistics.median(ours) * 1000:.0f} ms, "
          f"plain SDK median {statistics.median(plain) * 1000:.0f} ms")
    verdict = "ok" if statistics.median(ratios) <= 1.10 else "ABOVE GOAL"
    print(f"  median ratio ensure/plain = {statistics.median(ratios):.3f} "
          f"(goal <= 1.10: {verdict})")


def bench_status_all(bench: Bench, fleet: int, start: bool, repeats: int = 50) -> None:
    made = time.perf_counter()
    for i in range(fleet):
        bench.plain_sdk(bench.spec("f", i, ports=start), start=start)
    print(f"fleet of {fleet} managed containers ({'started' if start else 'created'}) made in "
          f"{time.perf_counter() - made:.1f} s")
    label = {"label": f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"}
    ours, raw = [], []
    for i in range(repeats):
        run_ours = lambda: bench.orch.status_all()  # noqa: E731
        run_raw = lambda: bench.client.api.containers(all=True, filters=label)  # noqa: E731
        first, second = (run_ours, run_raw) if i % 2 == 0 else (run_raw, run_ours)
        t1, t2 = timed(first), timed(second)
        ours.append(t1 if first is run_ours else t2)
        raw.append(t2 if first is run_ours else t1)
    seen = len(bench.orch.status_all())
    entries = bench.client.api.containers(all=True, filters=label)
    parse = timed(lambda: [observed_from_list(entry) for entry in entries])
    m_ours, m_raw = statistics.median(ours), statistics.median(raw)
    print(f"status_all over {seen} managed containers: {m_ours * 1000:.1f} ms; raw labeled list "
          f"call: {m_raw * 1000:.1f} ms; ratio {m_ours / m_raw:.3f} (median of {repeats})")
    print(f"  of which reading the list into Observed: {parse * 1000:.2f} ms (the rest is the "
          "daemon, shared with other users, so the ratio is noisy)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="instances per side (default 10)")
    parser.add_argument("--fleet", type=int, default=200, help="containers for status_all")
    parser.add_argument("--start-fleet", action="store_true",
                        help="start the fleet too (needs 2 ports each; slower)")
    args = parser.parse_args()
    client = docker.from_env(timeout=60)
    image = build_agent_image(client)
    bench = Bench(client, image)
    try:
        bench_create(bench, args.n)
        bench_status_all(bench, args.fleet, args.start_fleet)
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
