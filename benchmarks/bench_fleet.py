"""Claworc at fleet size: N instances built through the project, every cost beside raw SDK calls.

    .venv/bin/python benchmarks/bench_fleet.py [--n 1000] [--running 100] [--pairs 10]
        [--postgres postgres://claworc:claworc@127.0.0.1:5432/] [--no-postgres] [--no-bulk]

1. Builds N instances through the project (services.instance_create; the reconcile task runs in
   this process, on 3 threads), then stops all but --running of them (default min(100, N/10)):
   N containers and 4N volumes on the daemon, as staff would have made them.
2. At that fleet size, each side by side in the same run, alternating which goes first:
   - create ÷ raw: DockerOrchestrator.ensure against the same container by plain SDK calls;
   - worker path ÷ raw: the reconcile task on a new row (lease, ports, spec, ensure, status,
     activity) against plain SDK calls.
3. For SQLite and PostgreSQL each (a subprocess with a fresh database holding a copy of the
   fleet's rows): the status list and the admin changelist at 10 rows and at N (time ratio and
   queries; a copy of the database at 10 rows is kept, and the two are timed in turns), and
   reconcile_all against one raw labelled list call, without and with 100 orphans.
4. Bulk start of 100 stopped instances through the admin action with 2 Celery worker processes,
   against starting 100 plain containers serially and on 2 and 4 threads.

Names start with benchf-<token>- (containers, volumes `claworc-benchf-…`, config files; the
raw side's bench-fleet<token>-…), host ports are 22000-24999 (the fleet) and 25000-25999 (the raw
side), all below the kernel's ephemeral range; everything is removed at the end, also after an
error, Ctrl-C or SIGTERM. `--clean` removes what an earlier run killed with SIGKILL left behind.
At N = 1,000 it takes a while: N is a flag.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PREFIX = "benchf-"
FLEET_PORT_START = 22000
#: The raw side's names start bench-<RAW_TOKEN> ("l" and "t" keep bench_docker's hex apart).
RAW_TOKEN = "fleet"
#: The raw side's ports, apart from bench_docker.py's (31400-31999), which may run meanwhile.
RAW_PORT_START = 25000
ORPHANS = 100
BULK = 100
PAGE_ROUNDS = 8
PAGE_REPEATS = 5
RECONCILE_REPEATS = 10
ADMIN_USER, ADMIN_PASSWORD = "bench", "bench-password-not-secret"


# --- set-up -------------------------------------------------------------------------------------

def site_env(tmp: str, *, database_url: str, n: int, pairs: int, broker: str, queue: str,
             image: str, port_start: int) -> dict[str, str]:
    from cryptography.fernet import Fernet

    end = port_start + 2 * (n + pairs + BULK) + 1
    return {
        "DJANGO_SETTINGS_MODULE": "claworc_site.settings",
        "SECRET_KEY": "bench-" + secrets.token_hex(16),
        "DEBUG": "false",
        "ALLOWED_HOSTS": "localhost,127.0.0.1,testserver",
        "DATABASE_URL": database_url,
        "CLAWORC_DATA_DIR": os.path.join(tmp, "data"),
        "CLAWORC_DOCKER_CONFIG_DIR": os.path.join(tmp, "configs"),
        "CLAWORC_DOCKER_PRIVILEGED": "false",
        "CLAWORC_DOCKER_INIT": "true",
        "CLAWORC_AGENT_IMAGE": image,
        "CLAWORC_NODE_IP": "127.0.0.1",
        "CLAWORC_PORT_START": str(port_start),
        "CLAWORC_PORT_END": str(end),
        "CLAWORC_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        # One installation for every phase: the database phases find the fleet's workloads
        # their own, not another site's.
        "CLAWORC_SITE_ID": "benchf-" + secrets.token_hex(4),
        "CLAWORC_RECONCILE_INTERVAL": "3600",
        "CELERY_BROKER_URL": broker,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "LOG_LEVEL": "ERROR",
        "PYTHONUNBUFFERED": "1",
    }


def django_setup(env: dict[str, str], *, eager: bool) -> None:
    os.environ.update(env)
    os.environ["CELERY_TASK_ALWAYS_EAGER"] = "true" if eager else "false"
    import warnings

    import django

    warnings.filterwarnings("ignore", message="No directory at")  # no collectstatic here

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from instances.models import Setting
    from orchestrators import registry

    Setting.set(registry.SETTING_KEY, "docker")
    get_user_model().objects.create_superuser(ADMIN_USER, password=ADMIN_PASSWORD)


def staff_client():
    from django.test import Client

    client = Client()
    assert client.login(username=ADMIN_USER, password=ADMIN_PASSWORD)
    return client


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def verdict(ok: bool) -> str:
    return "ok" if ok else "ABOVE GOAL"


def side_by_side(ours, raw, repeats: int) -> tuple[float, float]:
    """Median times of `ours` and `raw`, alternating which goes first."""
    t_ours, t_raw = [], []
    for i in range(repeats):
        if i % 2 == 0:
            t_ours.append(timed(ours))
            t_raw.append(timed(raw))
        else:
            t_raw.append(timed(raw))
            t_ours.append(timed(ours))
    return statistics.median(t_ours), statistics.median(t_raw)


# --- 1. the fleet, through the project ----------------------------------------------------------

def build_fleet(prefix: str, n: int, running: int, threads: int = 3) -> list[int]:
    from django.db import close_old_connections, connection
    from django.db.models import Count

    from instances import services
    from instances.models import Activity, Instance

    def create(i: int) -> None:
        try:
            made = services.instance_create(display_name=f"Fleet {i}", name=f"{prefix}f{i:04d}")
            if i >= running:
                # Stopped at once: a thousand running containers at the same time (a shim and
                # two proxies each) ran this 2-core host out of threads, and starts failed.
                services.instance_stop(instance_ids=[made.pk])
        finally:
            close_old_connections()
            connection.close()

    started = time.perf_counter()
    pool = ThreadPoolExecutor(threads)
    try:
        for done, _ in enumerate(pool.map(create, range(n)), 1):
            if done % 100 == 0:
                print(f"  created {done}/{n} ({time.perf_counter() - started:.0f} s)", flush=True)
    finally:
        pool.shutdown(cancel_futures=True)  # after Ctrl-C: no more creates, straight to clean-up
    ids = list(Instance.objects.filter(name__startswith=prefix).order_by("name")
               .values_list("pk", flat=True))
    counts = dict(Instance.objects.filter(name__startswith=prefix).values_list("status")
                  .annotate(n=Count("pk")).order_by())
    # A row whose start failed and was then stopped is "stopped" with no container: count them.
    failed = Activity.objects.filter(instance_name__startswith=prefix,
                                     result=Activity.Result.ERROR).count()
    print(f"fleet of {n} built through the project in {time.perf_counter() - started:.0f} s: "
          f"{counts}; {failed} errors recorded while building", flush=True)
    return ids


# --- 2. create and worker path at fleet size ----------------------------------------------------

def bench_create_and_worker(bench, prefix: str, pairs: int) -> None:
    from instances import tasks
    from instances.models import Instance
    from orchestrators.registry import get_orchestrator

    orch = get_orchestrator()
    ratios = []
    for i in range(pairs):
        ours, raw = bench.spec("o", i), bench.spec("p", i)
        first, second = ((lambda: orch.ensure(ours)), (lambda: bench.plain_sdk(raw)))  # noqa: B023
        if i % 2:
            t_raw, t_ours = timed(second), timed(first)
        else:
            t_ours, t_raw = timed(first), timed(second)
        ratios.append(t_ours / t_raw)
    ratio = statistics.median(ratios)
    print(f"create ÷ raw at this fleet size: median ratio {ratio:.3f} over {pairs} pairs "
          f"(goal <= 1.10: {verdict(ratio <= 1.10)})", flush=True)

    ratios, ours_t = [], []
    for i in range(pairs):
        row = Instance(name=f"{prefix}w{i:03d}", display_name=f"Worker path {i}")
        # No signal: the row exists, its reconcile task has not run (as a worker receives it).
        Instance.objects.bulk_create([row])
        row = Instance.objects.get(name=row.name)
        raw = bench.spec("q", i)
        run_ours = lambda: tasks.reconcile_instance.apply(args=(row.pk,))  # noqa: B023, E731
        run_raw = lambda: bench.plain_sdk(raw)  # noqa: B023, E731
        if i % 2:
            t_raw, t_ours = timed(run_raw), timed(run_ours)
        else:
            t_ours, t_raw = timed(run_ours), timed(run_raw)
        row.refresh_from_db()
        assert row.status == "running", (row.status, row.status_message)
        ratios.append(t_ours / t_raw)
        ours_t.append(t_ours)
    ratio = statistics.median(ratios)
    print(f"worker path ÷ raw (lease, ports, spec, ensure, status, activity): median ratio "
          f"{ratio:.3f}, ours {statistics.median(ours_t) * 1000:.0f} ms "
          f"(goal <= 1.15: {verdict(ratio <= 1.15)})", flush=True)
    # Only the fleet stays: what is left here would count as orphans in the next phase.
    Instance.objects.filter(name__startswith=f"{prefix}w").delete()
    remove_prefixed(bench.client, f"{prefix}w")
    bench.cleanup()


# --- 3. pages and reconcile_all, per database (a subprocess each) -------------------------------

def dump_rows(prefix: str, path: str) -> None:
    from instances.models import Instance

    rows = [
        {"name": i.name, "display_name": i.display_name, "desired_state": i.desired_state,
         "status": i.status, "status_message": i.status_message,
         "port_chrome": getattr(getattr(i, "ports", None), "port_chrome", None)}
        for i in Instance.objects.filter(name__startswith=prefix).select_related("ports")
    ]
    with open(path, "w") as out:
        json.dump(rows, out)


def copy_rows(rows: list[dict]) -> None:
    from instances.models import Instance, PortAllocation

    # Settled rows (observed_generation = generation), as the fleet's are: a row owing work
    # would be skipped by reconcile_all's comparison and handed to a converge instead.
    made = Instance.objects.bulk_create(
        Instance(**{k: v for k, v in row.items() if k != "port_chrome"}, observed_generation=1)
        for row in rows)
    by_name = dict(Instance.objects.filter(name__in=[m.name for m in made])
                   .values_list("name", "pk"))
    PortAllocation.objects.bulk_create(
        PortAllocation(instance_id=by_name[row["name"]], port_chrome=row["port_chrome"],
                       port_terminal=row["port_chrome"] + 1)
        for row in rows if row["port_chrome"])


def use_database(name: str) -> None:
    """Point the default connection at database `name` (an SQLite file or a PostgreSQL
    database); the next query connects to it."""
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = name


@contextlib.contextmanager
def snapshot(tag: str):
    """A copy of the default database as it is now, by name: the fleet at 10 rows, kept beside
    the one that grows to N so the two can be timed in turns. Removed on leaving."""
    from django.db import connection

    original = connection.settings_dict["NAME"]
    connection.close()
    if connection.vendor == "sqlite":
        copy = f"{original}.{tag}"
        shutil.copyfile(original, copy)
        try:
            yield copy
        finally:
            use_database(original)
            with contextlib.suppress(FileNotFoundError):
                os.remove(copy)
        return
    s = connection.settings_dict
    server = (f"postgresql://{s['USER']}:{s['PASSWORD']}@{s['HOST'] or '127.0.0.1'}:"
              f"{s['PORT'] or 5432}")
    copy = f"{original}_{tag}"
    with postgres_database(server, name=copy, template=original):
        try:
            yield copy
        finally:
            use_database(original)


def time_pages(client, url: str, databases: dict[str, str]) -> dict[str, tuple[float, int, int]]:
    """{label: (median seconds, queries, bytes)} of GET url against each database, timed in
    turns (PAGE_ROUNDS rounds of PAGE_REPEATS requests each, alternating which goes first), so
    a change in the machine's load falls on all of them alike."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times: dict[str, list[float]] = {label: [] for label in databases}
    sizes, queries = {}, {}
    labels = list(databases)
    for round_ in range(PAGE_ROUNDS):
        for label in labels if round_ % 2 == 0 else labels[::-1]:
            use_database(databases[label])
            client.get(url)  # warm: connected, templates compiled, session cached
            if label not in queries:
                with CaptureQueriesContext(connection) as captured:
                    sizes[label] = len(client.get(url).content)
                queries[label] = len(captured)
            for _ in range(PAGE_REPEATS):
                start = time.perf_counter()
                response = client.get(url)
                times[label].append(time.perf_counter() - start)
                assert response.status_code == 200, response.status_code
    return {label: (statistics.median(times[label]), queries[label], sizes[label])
            for label in databases}


def db_phase(args) -> None:
    import docker

    tmp = tempfile.mkdtemp(prefix="claworc-bench-db-")
    env = json.loads(Path(args.env_file).read_text())
    env["DATABASE_URL"] = args.database_url
    env["CLAWORC_DATA_DIR"] = os.path.join(tmp, "data")
    django_setup(env, eager=True)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from instances import services
    from orchestrators.base import LABEL_MANAGED_BY, MANAGED_BY_VALUE

    vendor = connection.vendor
    rows = json.loads(Path(args.rows_file).read_text())
    client = staff_client()
    pages = {"status list /": "/", "admin changelist": "/admin/instances/instance/"}
    copy_rows(rows[:10])
    n = len(rows)
    with snapshot("ten") as at_10:
        copy_rows(rows[10:])
        at_n = connection.settings_dict["NAME"]
        for label, url in pages.items():
            timed_pages = time_pages(client, url, {"10": at_10, "N": at_n})
            (t_10, q_10, _), (t_n, q_n, size_n) = timed_pages["10"], timed_pages["N"]
            ratio = t_n / t_10
            print(f"[{vendor}] {label}: {t_10 * 1000:.1f} ms at 10, {t_n * 1000:.1f} ms at {n} "
                  f"({size_n // 1024} KB); ratio {ratio:.2f} (goal <= 2: {verdict(ratio <= 2)}); "
                  f"queries {q_10} / {q_n} (goal <= 10: {verdict(max(q_10, q_n) <= 10)})",
                  flush=True)

    docker_client = docker.from_env(timeout=120)
    label = {"label": f"{LABEL_MANAGED_BY}={MANAGED_BY_VALUE}"}
    owner = f"bench-{uuid.uuid4().hex[:6]}"

    def ours():
        assert services.instances_reconcile_all(owner=owner) is not None

    def raw():
        docker_client.api.containers(all=True, filters=label)

    def measure(what: str) -> None:
        ours()  # settles what changed since the last run
        with CaptureQueriesContext(connection) as queries:
            report = services.instances_reconcile_all(owner=owner)
        t_ours, t_raw = side_by_side(ours, raw, RECONCILE_REPEATS)
        ratio = t_ours / t_raw
        print(f"[{vendor}] reconcile_all {what}: {t_ours * 1000:.0f} ms, raw labelled list "
              f"{t_raw * 1000:.0f} ms; ratio {ratio:.2f} (goal <= 1.5: {verdict(ratio <= 1.5)}); "
              f"{len(queries)} queries; report: {report}", flush=True)

    measure(f"over {n} instances")
    orphans = [f"{args.prefix}orphan-{vendor[:2]}{i:03d}" for i in range(ORPHANS)]
    try:
        for name in orphans:  # labelled managed-by=claworc, no row: what reconcile_all reports
            docker_client.api.create_container(
                env["CLAWORC_AGENT_IMAGE"], name=name,
                labels={LABEL_MANAGED_BY: MANAGED_BY_VALUE, "claworc.instance": name})
        measure(f"over {n} instances and {ORPHANS} orphans")
    finally:
        for name in orphans:
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.api.remove_container(name, force=True)
        shutil.rmtree(tmp, ignore_errors=True)


def run_db_phase(env_file: str, rows_file: str, database_url: str, prefix: str) -> None:
    cmd = [sys.executable, __file__, "--phase", "db", "--env-file", env_file,
           "--rows-file", rows_file, "--database-url", database_url, "--prefix", prefix]
    child = subprocess.Popen(cmd, cwd=ROOT, env={k: v for k, v in os.environ.items()
                                                 if not k.startswith(("DJANGO_", "DATABASE_"))})
    try:
        code = child.wait()
    except BaseException:
        # Interrupted: the child must not make orphan containers after our clean-up ran.
        child.terminate()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
        raise
    if code:
        print(f"  the {database_url.split(':')[0]} phase failed (exit {code})")


@contextlib.contextmanager
def postgres_database(url: str, *, name: str = "", template: str = ""):
    """A new database on the PostgreSQL server at `url` (a copy of `template` if given), by URL;
    dropped on leaving."""
    import psycopg

    name = name or f"claworc_bench_{uuid.uuid4().hex[:8]}"
    admin = url.rstrip("/") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield url.rstrip("/") + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- 4. bulk start of 100 -----------------------------------------------------------------------

def bench_bulk_start(bench, ids: list[int], env: dict[str, str], tmp: str) -> None:
    from claworc_site.celery import app
    from instances.models import Instance

    stopped = list(Instance.objects.filter(pk__in=ids, status="stopped")
                   .order_by("name").values_list("pk", flat=True)[:BULK])
    if len(stopped) < BULK:
        print(f"bulk start: only {len(stopped)} stopped instances; use a larger --n")
        return
    log = open(os.path.join(tmp, "worker.log"), "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "claworc_site", "worker",
         "--loglevel", "INFO", "--pool", "prefork", "--concurrency", "2",
         "--hostname", f"bench-{uuid.uuid4().hex[:6]}@%h", "--without-gossip",
         "--without-mingle"],
        cwd=ROOT, env={**os.environ, **env, "CELERY_TASK_ALWAYS_EAGER": "false"},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"ready." not in Path(tmp, "worker.log").read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the Celery worker did not start:\n"
                                 + Path(tmp, "worker.log").read_text()[-3000:])
            time.sleep(0.2)
        app.conf.task_always_eager = False
        client = staff_client()
        started = time.perf_counter()
        response = client.post("/admin/instances/instance/", {
            "action": "start_instances", "_selected_action": stopped, "index": 0})
        assert response.status_code == 302, response.status_code
        # Each start takes well under a second; 10 s each, serially, is beyond any slow daemon.
        deadline = time.monotonic() + 10 * BULK
        while Instance.objects.filter(pk__in=stopped, status="running").count() < BULK:
            if time.monotonic() > deadline:
                raise SystemExit("bulk start did not finish:\n"
                                 + Path(tmp, "worker.log").read_text()[-3000:])
            time.sleep(0.05)
        t_ours = time.perf_counter() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()

    specs = [bench.spec("b", i) for i in range(BULK)]
    for spec in specs:
        bench.plain_sdk(spec, start=False)
    api = bench.client.api

    def start_all(threads: int) -> float:
        begin = time.perf_counter()
        if threads == 1:
            for spec in specs:
                api.start(spec.name)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda s: api.start(s.name), specs))
        spent = time.perf_counter() - begin
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda s: api.stop(s.name, timeout=10), specs))
        return spent

    serial, two, four = start_all(1), start_all(2), start_all(4)
    best = min(serial, two, four)
    ratio = best / t_ours
    print(f"bulk start of {BULK} (admin action, 2 worker processes): {t_ours:.1f} s; raw serial "
          f"{serial:.1f} s, raw 2 threads {two:.1f} s, raw 4 threads {four:.1f} s; best raw ÷ "
          f"ours = {ratio:.2f} (goal >= 0.9: {verdict(ratio >= 0.9)})", flush=True)


# --- clean-up -----------------------------------------------------------------------------------

def remove_prefixed(client, prefix: str) -> None:
    """Remove the containers named `prefix`… and then their volumes, several at a time."""
    import docker.errors

    def remove(kind: str, name: str) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            if kind == "container":
                client.api.remove_container(name, force=True)
            else:
                client.api.remove_volume(name, force=True)

    for _ in range(3):  # a removal refused while another is in progress is tried again
        boxes = [n.lstrip("/") for box in client.api.containers(all=True, filters={"name": prefix})
                 for n in box.get("Names") or [] if n.lstrip("/").startswith(prefix)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda name: remove("container", name), boxes))
        listed = client.api.volumes(filters={"name": f"claworc-{prefix}"}).get("Volumes") or []
        volumes = [v["Name"] for v in listed if v["Name"].startswith(f"claworc-{prefix}")]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda name: remove("volume", name), volumes))
        if not boxes and not volumes:
            return


def machine_state(when: str) -> None:
    """Cores, memory and load: the machine is shared, and the figures mean little without it."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    mem = {line.split(":")[0]: int(line.split()[1]) // 1024
           for line in Path("/proc/meminfo").read_text().splitlines()
           if line.startswith(("MemTotal", "MemAvailable"))}
    print(f"machine {when}: {os.cpu_count()} cores, {mem.get('MemTotal')} MB memory "
          f"({mem.get('MemAvailable')} MB available), load average {' '.join(load)}",
          flush=True)


def postgres_available(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url.rstrip("/") + "/postgres", connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001 - any failure means "no server here"
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument("--running", type=int, default=None,
                        help="instances left running (default min(100, N/10))")
    parser.add_argument("--pairs", type=int, default=10, help="pairs for the create ratios")
    parser.add_argument("--port-start", type=int, default=FLEET_PORT_START,
                        help=f"first host port of the fleet (default {FLEET_PORT_START})")
    parser.add_argument("--postgres", default="postgres://claworc:claworc@127.0.0.1:5432/",
                        help="PostgreSQL server URL (a database is created and dropped)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-bulk", action="store_true", help="skip the bulk start")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12",
                        help="broker for the bulk start (else the embedded SQLite broker)")
    parser.add_argument("--threads", type=int, default=3,
                        help="threads building the fleet (default 3)")
    parser.add_argument("--clean", action="store_true",
                        help="only remove what earlier runs left (every benchf-… object)")
    parser.add_argument("--phase", default="fleet", help=argparse.SUPPRESS)
    parser.add_argument("--env-file", help=argparse.SUPPRESS)
    parser.add_argument("--rows-file", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # `kill` and `timeout` send SIGTERM: clean up as after Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.phase == "db":
        db_phase(args)
        return
    if args.n < 10 + BULK * (not args.no_bulk):
        parser.error(f"--n must be at least {10 + BULK} (or use --no-bulk)")
    running = args.running if args.running is not None else min(100, args.n // 10)

    import docker
    from tests.docker_support import build_agent_image

    client = docker.from_env(timeout=120)
    if args.clean:
        remove_prefixed(client, PREFIX)
        remove_prefixed(client, f"bench-{RAW_TOKEN}")
        if postgres_available(args.postgres):
            import psycopg

            with psycopg.connect(args.postgres.rstrip("/") + "/postgres", autocommit=True) as conn:
                for (name,) in conn.execute("SELECT datname FROM pg_database "
                                            "WHERE datname LIKE 'claworc_bench_%'").fetchall():
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    image = build_agent_image(client)
    prefix = f"{PREFIX}{secrets.token_hex(2)}-"
    tmp = tempfile.mkdtemp(prefix="claworc-bench-fleet-")
    queue = f"claworc-bench-{uuid.uuid4().hex[:6]}"
    broker = args.redis
    try:
        import redis

        redis.Redis.from_url(broker, socket_timeout=3).ping()
    except Exception:  # noqa: BLE001 - no Redis: the embedded broker works too, slower
        broker = f"sqla+sqlite:///{tmp}/broker.sqlite3"
    env = site_env(tmp, database_url=f"sqlite:///{tmp}/fleet.sqlite3", n=args.n,
                   pairs=args.pairs, broker=broker, queue=queue, image=image,
                   port_start=args.port_start)
    env_file = os.path.join(tmp, "env.json")
    Path(env_file).write_text(json.dumps(env))
    print(f"fleet benchmark: N={args.n} ({running} running), prefix {prefix}, "
          f"{os.cpu_count()} cores, Docker {client.version().get('Version')}", flush=True)
    django_setup(env, eager=True)
    from bench_docker import Bench

    bench = Bench(client, image)
    bench.next_port = RAW_PORT_START
    bench.token = RAW_TOKEN + bench.token  # bench-fleet…: found by --clean, never bench_docker's
    machine_state("before")
    try:
        ids = build_fleet(prefix, args.n, running, threads=args.threads)
        bench_create_and_worker(bench, prefix, args.pairs)
        rows_file = os.path.join(tmp, "rows.json")
        dump_rows(f"{prefix}f", rows_file)
        run_db_phase(env_file, rows_file, f"sqlite:///{tmp}/copy.sqlite3", prefix)
        if not args.no_postgres and postgres_available(args.postgres):
            with postgres_database(args.postgres) as url:
                run_db_phase(env_file, rows_file, url, prefix)
        elif not args.no_postgres:
            print("PostgreSQL not reachable: its phase is skipped")
        if not args.no_bulk:
            bench_bulk_start(bench, ids, env, tmp)
        machine_state("after")
    finally:
        print("cleaning up…", flush=True)
        remove_prefixed(client, prefix)
        bench.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        if broker.startswith("redis"):
            with contextlib.suppress(Exception):
                import redis

                redis.Redis.from_url(broker).delete(queue)


if __name__ == "__main__":
    main()
