"""Pull first, replace second, on a fake host that pulls: the control flow of image pulls."""

from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.utils import timezone

from instances import services
from instances.models import Activity, ImagePull, Instance
from instances.services import images as image_services
from orchestrators.base import PullError
from orchestrators.registry import override
from tests.fakes import FakePullingOrchestrator

pytestmark = pytest.mark.django_db

OLD, NEW = "agent:1", "registry.example:5000/agent:2"


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.CLAWORC_PORT_START, settings.CLAWORC_PORT_END = 32000, 32399
    settings.CLAWORC_AGENT_IMAGE = OLD


@pytest.fixture
def host():
    with override(FakePullingOrchestrator(images={OLD: "sha256:old"},
                                          registry={NEW: "sha256:new"})) as fake:
        yield fake


def _make(name, **fields):
    return Instance.objects.bulk_create([Instance(display_name=name, name=name, **fields)])[0]


def _converge(pk):
    return services.instance_converge(pk=pk, owner="test")


def test_missing_image_is_pulled_once_while_the_workloads_keep_running(
        host, django_capture_on_commit_callbacks):
    a, b = _make("bot-a"), _make("bot-b")
    assert _converge(a.pk) == _converge(b.pk) == "running"
    assert Instance.objects.get(pk=a.pk).running_digest == "sha256:old"
    Instance.objects.update(image=NEW)

    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert _converge(a.pk) == "pulling"
        assert _converge(b.pk) == "pulling"
    assert len(queued) == 1  # one pull_image task for the two instances
    assert host.ops("pull") == []  # the converge itself never pulls
    for row in Instance.objects.all():
        assert row.status == "pulling"
        assert row.status_message == (f"Pulling image: {NEW}. The current container keeps "
                                      "running until it is here.")
        assert host.workloads[row.name].spec.image == OLD  # not touched
    assert ImagePull.objects.get(image=NEW).state == "queued"

    with django_capture_on_commit_callbacks(execute=False) as reconciles:
        assert image_services.image_pull(image=NEW, owner="worker") == "done"
    assert host.ops("pull") == [NEW]
    pull = ImagePull.objects.get(image=NEW)
    assert (pull.state, pull.digest, pull.attempts) == ("done", "sha256:new", 1)
    assert len(reconciles) == 2  # each waiting instance converges now

    assert _converge(a.pk) == _converge(b.pk) == "running"
    for row in Instance.objects.all():
        assert host.workloads[row.name].spec.image == NEW
        assert (row.status, row.running_digest) == ("running", "sha256:new")
    assert ("pull", "ok") in Activity.objects.filter(instance_name="bot-a").values_list(
        "action", "result")


def test_a_converge_looks_at_the_image_once(host):
    """Whether the image is there and which digest the workload runs came from two inspects of
    the same image per converge; one answers both."""
    a = _make("bot-a")
    assert _converge(a.pk) == "running"
    assert host.ops("local_image") == [OLD]
    assert Instance.objects.get(pk=a.pk).running_digest == "sha256:old"


def test_a_live_pull_is_joined_and_a_second_worker_finds_it_busy(host):
    a = _make("bot-a", image=NEW)
    assert _converge(a.pk) == "pulling"
    assert image_services.image_pull_request(image=NEW)[1] is False
    assert services.lease_acquire(name=image_services.pull_lease_name(NEW), owner="other")
    assert image_services.image_pull(image=NEW, owner="worker") == "busy"
    assert host.ops("pull") == []


@pytest.mark.parametrize(("raised", "cause", "words"), [
    (None, "not_found", "no such image"),
    (PullError("Could not pull x: the registry is unreachable", cause="unreachable"),
     "unreachable", "unreachable"),
    (SoftTimeLimitExceeded(), "timeout", "CLAWORC_PULL_TIMEOUT=3600 s"),
])
def test_a_failed_pull_puts_the_waiting_instances_in_error_with_the_cause(
        host, settings, raised, cause, words):
    settings.CLAWORC_PULL_TIMEOUT = 3600
    if raised is None:
        host.registry.pop(NEW)
    else:
        host.registry[NEW] = raised
    a, b = _make("bot-a", image=NEW), _make("bot-b", image=NEW)
    _converge(a.pk), _converge(b.pk)

    assert image_services.image_pull(image=NEW, owner="worker") == "error"

    pull = ImagePull.objects.get(image=NEW)
    assert pull.state == "error" and pull.cause == cause and words in pull.message
    for row in Instance.objects.all():
        assert row.status == "error" and words in row.status_message
    # A person acting (recreate, start, an edit) asks for a new pull.
    assert image_services.image_pull_request(image=NEW)[1] is True


def test_progress_reaches_the_row_and_the_waiting_instances(host, monkeypatch):
    monkeypatch.setattr(image_services, "PROGRESS_EVERY", 0.0)
    seen = []
    real = host.pull

    def pull(image, *, auth=None, on_progress=None):
        def spy(progress):
            on_progress(progress)
            seen.append((ImagePull.objects.get(image=image).progress_text(),
                         Instance.objects.get(name="bot-a").status_message))
        return real(image, auth=auth, on_progress=spy)

    host.pull = pull
    a = _make("bot-a", image=NEW)
    _converge(a.pk)
    image_services.image_pull(image=NEW, owner="worker")
    assert seen == [("50% (50 B of 100 B, 1 of 2 layers)",
                     f"Pulling image 50% (50 B of 100 B, 1 of 2 layers): {NEW}. The container is "
                     "created once it is here.")]


def test_reconcile_all_requests_a_pull_whose_worker_died_and_follows_up_a_finished_one(
        host, django_capture_on_commit_callbacks):
    a = _make("bot-a", image=NEW)
    _converge(a.pk)
    stale = timezone.now() - image_services.PULL_STALE - timedelta(seconds=1)
    ImagePull.objects.filter(image=NEW).update(state="pulling", heartbeat_at=stale,
                                               requested_at=stale)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        services.instances_reconcile_all(owner="beat")
    assert ImagePull.objects.get(image=NEW).state == "queued"
    assert len(queued) == 1  # the pull again; the instance stays pulling
    assert Instance.objects.get(pk=a.pk).status == "pulling"

    with django_capture_on_commit_callbacks(execute=False) as queued:
        services.instances_reconcile_all(owner="beat")
    assert queued == []  # a live pull is left alone

    ImagePull.objects.filter(image=NEW).update(state="done")
    with django_capture_on_commit_callbacks(execute=False) as queued:
        services.instances_reconcile_all(owner="beat")
    assert len(queued) == 1  # its reconcile was lost: sent again


def test_registry_credentials_are_stored_encrypted_and_used_by_host(host):
    image_services.registry_auth_set(registry="Registry.Example:5000", username="robot",
                                     password="pull-s3cret")
    from instances.models import Setting

    stored = Setting.objects.get(key="registry_auth:registry.example:5000").value
    assert "pull-s3cret" not in stored and "robot" not in stored
    auth = image_services.registry_auth_for(NEW)
    assert (auth.username, auth.password) == ("robot", "pull-s3cret")
    assert "pull-s3cret" not in repr(auth)
    assert image_services.registry_auth_for(OLD) is None
    assert image_services.registries_with_auth() == ["registry.example:5000"]


def test_set_registry_credentials_reads_the_password_from_stdin(monkeypatch, capsys):
    import io

    from django.core.management import call_command

    monkeypatch.setattr("sys.stdin", io.StringIO("pull-s3cret\n"))
    call_command("set_registry_credentials", "ghcr.io", "--username", "robot")
    out = capsys.readouterr().out
    assert "Stored the credentials of robot for ghcr.io" in out and "pull-s3cret" not in out
    assert image_services.registry_auth_for("ghcr.io/o/agent:1").password == "pull-s3cret"
    call_command("set_registry_credentials", "ghcr.io", "--remove")
    assert image_services.registry_auth_for("ghcr.io/o/agent:1") is None


def test_instance_page_shows_the_clusters_pull_events_while_not_running(client):
    from django.contrib.auth.models import User

    from tests.fakes import FakeOrchestrator

    class Cluster(FakeOrchestrator):
        backend_name = "kubernetes"

        def pull_events(self, name):
            return [f'12:00:07 Pulling: Pulling image "{NEW}"']

    client.force_login(User.objects.create_superuser("ops", password="pw-ops-123456"))
    instance = _make("bot-k", image=NEW, status="creating")
    with override(Cluster()):
        html = client.get(f"/instances/{instance.name}/").content.decode()
        assert "Image pull" in html and f"Pulling image &quot;{NEW}&quot;" in html
        Instance.objects.filter(pk=instance.pk).update(status="running")
        assert "Image pull" not in client.get(f"/instances/{instance.name}/").content.decode()
