"""One side of the race for the last slot (test_capacity.py runs four of these at once).

  python -m tests.instances.capacity_race setup
  python -m tests.instances.capacity_race race admin|worker PK BARRIER_DIR INDEX

Each racer gets ready (Django loaded, signed in), says so in BARRIER_DIR, waits for the `go`
file, starts instance PK — as an admin session posting the changelist's Start action, or as a
worker running a schedule's start — and prints what it was told, as JSON.
"""

import html
import json
import re
import sys
import time
from decimal import Decimal
from pathlib import Path

import django


def setup() -> None:
    from django.contrib.auth.models import User

    from instances.models import Instance, Setting
    from orchestrators import registry
    from orchestrators.base import HostCapacity

    User.objects.create_superuser("race-admin", password="race-admin-password")
    Setting.set(registry.SETTING_KEY, registry.DOCKER)
    # Room for two instances of 500m / 4Gi; one runs: one slot is left.
    registry.store_capacity("docker", HostCapacity(
        totals={"requests.cpu": Decimal(1), "limits.memory": Decimal(8 * 2**30)},
        per_instance_max={"cpu": Decimal(2)}, host=True, source="docker info"))
    Instance.objects.bulk_create([Instance(name="bot-holder", display_name="holder",
                                           status="running")])
    racers = Instance.objects.bulk_create(
        Instance(name=f"bot-racer-{i}", display_name=f"racer {i}", desired_state="stopped",
                 status="stopped") for i in range(4))
    print(json.dumps([r.pk for r in racers]))


def race(mode: str, pk: int, barrier: Path, index: int) -> None:
    from django.contrib.auth.models import User
    from django.test import Client

    from instances import services

    client = None
    if mode == "admin":
        client = Client()
        client.force_login(User.objects.get(username="race-admin"))
        client.get("/admin/instances/instance/")  # warm: the first request loads the admin
    else:
        services.liveness()  # warm: the first queries load the models
    (barrier / f"ready-{index}").touch()
    deadline = time.monotonic() + 300
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go")
        time.sleep(0.002)
    if client is not None:
        page = client.post("/admin/instances/instance/", {
            "action": "start_instances", "_selected_action": [str(pk)], "index": "0",
            "select_across": "0"}, follow=True)
        said = " ".join(html.unescape(m) for m in re.findall(
            r'<li class="(?:success|warning|info|error)">(.*?)</li>', page.content.decode(),
            flags=re.S))
        print(json.dumps({"mode": mode, "said": said}))
    else:
        outcome = services.instance_start(instance_ids=[pk], actor="schedule")
        print(json.dumps({"mode": mode, "said": outcome.summary(),
                          "queued": outcome.queued, "skipped": outcome.skipped}))


if __name__ == "__main__":
    django.setup()
    if sys.argv[1] == "setup":
        setup()
    else:
        race(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
