import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from instances.models import Instance, PortAllocation
from instances.services import PortRangeFull, ports_allocate, ports_free

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_range(settings):
    settings.CLAWORC_PORT_START = 30100
    settings.CLAWORC_PORT_END = 30105  # three pairs: 30100, 30102, 30104
    return settings


def _inst(name):
    return Instance.objects.create(display_name=name, name=name)


@pytest.mark.django_db
def test_pairs_are_even_odd_lowest_free_and_freed_on_delete(small_range):
    a, b, c = _inst("bot-a"), _inst("bot-b"), _inst("bot-c")
    pa, pb = ports_allocate(instance=a), ports_allocate(instance=b)
    assert (pa.port_chrome, pa.port_terminal) == (30100, 30101)
    assert (pb.port_chrome, pb.port_terminal) == (30102, 30103)
    assert ports_allocate(instance=a).pk == pa.pk  # asking again keeps the pair
    a.delete()
    # Reserved while `deleting`: its container may still hold the ports.
    assert PortAllocation.objects.filter(port_chrome=30100).exists()
    Instance.objects.filter(pk=a.pk).purge()  # what the teardown does once the workload is gone
    assert not PortAllocation.objects.filter(port_chrome=30100).exists()
    assert ports_allocate(instance=c).port_chrome == 30100  # the lowest free one
    ports_free(instance=c)
    assert not PortAllocation.objects.filter(instance=c).exists()


@pytest.mark.django_db
def test_full_range_is_a_clear_error_and_allocates_nothing(small_range):
    for n in range(3):
        ports_allocate(instance=_inst(f"bot-{n}"))
    extra = _inst("bot-extra")
    with pytest.raises(PortRangeFull, match="CLAWORC_PORT_START=30100 and CLAWORC_PORT_END=30105"):
        ports_allocate(instance=extra)
    assert not PortAllocation.objects.filter(instance=extra).exists()
    assert PortAllocation.objects.count() == 3


@pytest.mark.django_db
def test_database_refuses_a_double_or_malformed_pair():
    from django.db import IntegrityError, transaction

    a, b = _inst("bot-a"), _inst("bot-b")
    PortAllocation.objects.create(instance=a, port_chrome=30100, port_terminal=30101)
    for chrome, terminal in [(30100, 30101), (30103, 30104), (30102, 30105)]:
        with pytest.raises(IntegrityError), transaction.atomic():
            PortAllocation.objects.create(instance=b, port_chrome=chrome, port_terminal=terminal)


# --- two processes at once, on SQLite (a file) and PostgreSQL -------------------------------

_WORKER = """
import sys
import django
django.setup()
from instances.models import Instance
from instances.services import ports_allocate
tag = sys.argv[1]
objs = Instance.objects.bulk_create(
    [Instance(display_name=f"{tag}{i}", name=f"bot-{tag}-{i}") for i in range(50)]
)
sys.stdin.readline()  # both processes start allocating at the same moment
for inst in Instance.objects.filter(name__startswith=f"bot-{tag}-"):
    ports_allocate(instance=inst)
print("ok")
"""


def _concurrent_allocation(database_url: str) -> list[tuple[int, int]]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "claworc_site.settings",
        "CLAWORC_PORT_START": "40000",
        "CLAWORC_PORT_END": "40299",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env,
                   check=True)
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, tag], cwd=ROOT, env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for tag in ("a", "b")
    ]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    dump = subprocess.run(
        [sys.executable, "-c",
         "import django; django.setup(); from instances.models import PortAllocation as P; "
         "print('\\n'.join(f'{a} {b}' for a, b in P.objects.values_list("
         "'port_chrome', 'port_terminal')))"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout.split("\n")
    return [tuple(map(int, line.split())) for line in dump if line.strip()]


def _assert_distinct_pairs(pairs):
    assert len(pairs) == 100
    chrome = [c for c, _ in pairs]
    assert len(set(chrome)) == 100
    assert all(c % 2 == 0 and t == c + 1 and 40000 <= c < 40299 for c, t in pairs)
    # Lowest free first: together they filled the bottom of the range with no gap.
    assert sorted(chrome) == list(range(40000, 40200, 2))


@pytest.mark.slow
def test_two_processes_get_distinct_pairs_on_sqlite(tmp_path):
    pairs = _concurrent_allocation(f"sqlite:///{tmp_path / 'ports.sqlite3'}")
    _assert_distinct_pairs(pairs)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_processes_get_distinct_pairs_on_postgres(postgres_url):
    import psycopg

    dbname = f"claworc_ports_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(postgres_url + "postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        _assert_distinct_pairs(_concurrent_allocation(postgres_url + dbname))
    finally:
        admin.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
        admin.close()
