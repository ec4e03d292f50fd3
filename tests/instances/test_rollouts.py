"""Fleet image updates on a fake host that pulls: resolve, pull once, batches, stop at a failure."""

import pytest
from django.db.models import F

from instances import services
from instances.models import ImagePull, Instance, Rollout
from instances.services import images, rollouts
from orchestrators.base import FinalError
from orchestrators.registry import override
from tests.fakes import FakePullingOrchestrator

pytestmark = pytest.mark.django_db

IMAGE = "registry.example:5000/agent:latest"


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 32000, 32399
    settings.CLAWORC_AGENT_IMAGE = IMAGE


@pytest.fixture
def host():
    with override(FakePullingOrchestrator(images={IMAGE: "sha256:old"},
                                          registry={IMAGE: "sha256:new"})) as fake:
        yield fake


def _fleet(n):
    made = Instance.objects.bulk_create(
        [Instance(display_name=f"bot-{i}", name=f"bot-{i}") for i in range(n)])
    for instance in made:
        assert services.instance_converge(pk=instance.pk, owner="t") == "running"
    return [i.pk for i in made]


def _drive(rollout_id, host, *, fail=None, rounds=30):
    """Run the worker's side by hand: rollout steps, pulls and converges, until it ends."""
    for _ in range(rounds):
        state = rollouts.rollout_advance(rollout_id=rollout_id)
        if ImagePull.objects.filter(state="queued").exists():
            images.image_pull(image=IMAGE, owner="w")
        for instance in Instance.objects.filter(recreate_requested__gt=F("recreate_done")):
            if fail and instance.name == fail:
                host.fail_next["recreate"] = FinalError("Range of CPUs is from 0.01 to 2.00")
            services.instance_converge(pk=instance.pk, owner="t")
        if state in ("done", "failed"):
            return state
    raise AssertionError("the rollout did not end")


def test_rollout_pulls_once_and_recreates_in_batches(host, django_capture_on_commit_callbacks):
    pks = _fleet(5)
    Instance.objects.filter(name="bot-4").update(running_digest="sha256:new")
    with django_capture_on_commit_callbacks(execute=False):
        rollout, = rollouts.rollout_start(instance_ids=pks, batch_size=2, actor="alice")
    order = []
    real = host.recreate

    def recreate(spec):
        order.append((Rollout.objects.get(pk=rollout.pk).message, spec.name))
        return real(spec)

    host.recreate = recreate
    assert _drive(rollout.pk, host) == "done"
    rollout.refresh_from_db()
    assert rollout.digest == "sha256:new" and host.ops("pull") == [IMAGE]
    steps = {s.instance_name: (s.batch, s.state) for s in rollout.steps.all()}
    assert steps == {"bot-0": (0, "done"), "bot-1": (0, "done"), "bot-2": (1, "done"),
                     "bot-3": (1, "done"), "bot-4": (2, "current")}
    # Batches one after the other: batch 2 started only once batch 1 was done.
    assert [name for _, name in order] == ["bot-0", "bot-1", "bot-2", "bot-3"]
    assert order[0][0].startswith("Batch 1 of 3") and order[2][0].startswith("Batch 2 of 3")
    assert set(Instance.objects.values_list("running_digest", flat=True)) == {"sha256:new"}
    assert rollout.message == "Done: 4 instance(s) updated to sha256:new."


def test_rollout_stops_at_the_first_failure_and_says_where(host):
    pks = _fleet(5)
    rollout, = rollouts.rollout_start(instance_ids=pks, batch_size=2)
    assert _drive(rollout.pk, host, fail="bot-2") == "failed"
    rollout.refresh_from_db()
    assert rollout.message.startswith("Stopped at batch 2: bot-2 failed: Range of CPUs")
    steps = {s.instance_name: s.state for s in rollout.steps.all()}
    assert steps == {"bot-0": "done", "bot-1": "done", "bot-2": "failed", "bot-3": "done",
                     "bot-4": "skipped"}
    assert host.workloads["bot-4"].spec.image == IMAGE
    assert Instance.objects.get(name="bot-4").running_digest == "sha256:old"


def test_a_tag_the_registry_does_not_have_touches_nothing(host):
    pks = _fleet(2)
    host.registry.pop(IMAGE)
    rollout, = rollouts.rollout_start(instance_ids=pks, batch_size=1)
    assert _drive(rollout.pk, host) == "failed"
    rollout.refresh_from_db()
    assert "Could not resolve" in rollout.message and "no such image" in rollout.message
    assert host.ops("recreate") == [] and host.ops("pull") == []
    assert set(rollout.steps.values_list("state", flat=True)) == {"skipped"}


def test_fleet_selection_takes_every_instance_on_the_same_image(host):
    pks = _fleet(3)
    Instance.objects.filter(name="bot-2").update(image="other:1")
    assert sorted(rollouts.instances_on_images(instance_ids=[pks[0]])) == pks[:2]


def test_batch_size_below_one_is_refused(host):
    with pytest.raises(ValueError):
        rollouts.rollout_start(instance_ids=_fleet(1), batch_size=0)
    assert not Rollout.objects.exists()


# --- the admin ----------------------------------------------------------------------------------

@pytest.fixture
def superuser(client):
    from django.contrib.auth.models import User

    user = User.objects.create_superuser("alice", "alice@example.com", "pw-alice-123")
    client.force_login(user)
    return user


def test_update_image_action_asks_then_starts_a_rollout_and_shows_it(
        host, client, superuser, django_capture_on_commit_callbacks):
    from django.urls import reverse

    pks = _fleet(3)
    url = reverse("admin:instances_instance_changelist")
    asked = client.post(url, {"action": "update_image", "_selected_action": pks[:2]})
    assert asked.status_code == 200 and b"Instances recreated at a time" in asked.content
    assert not Rollout.objects.exists()

    with django_capture_on_commit_callbacks(execute=False):
        done = client.post(url, {"action": "update_image", "_selected_action": pks[:2],
                                 "confirm": "yes", "batch_size": "1"})
    rollout = Rollout.objects.get()
    assert done.status_code == 302
    assert done.url == reverse("admin:instances_rollout_change", args=[rollout.pk])
    assert (rollout.batch_size, rollout.actor, rollout.steps.count()) == (1, "alice", 2)
    _drive(rollout.pk, host)
    page = client.get(done.url).content.decode()
    assert "2 of 2 instance(s)" in page and "bot-0" in page and "bot-1" in page
    assert "Done: 2 instance(s) updated to sha256:new." in page

    # bot-2 was not updated: the host has a newer digest for its tag than it runs.
    listing = client.get(url).content.decode()
    assert listing.count("update available") == 1


def test_fleet_action_updates_every_instance_on_the_image(
        host, client, superuser, django_capture_on_commit_callbacks):
    from django.urls import reverse

    pks = _fleet(3)
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("admin:instances_instance_changelist"),
                    {"action": "update_image_fleet", "_selected_action": pks[:1],
                     "confirm": "yes", "batch_size": "2"})
    assert Rollout.objects.get().steps.count() == 3
