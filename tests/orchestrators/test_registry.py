"""Backend selection with small fakes of the interface (the real daemon: test_detect_backend)."""

import threading
import time

import pytest
from django.test import override_settings

from instances.models import Setting
from orchestrators import registry
from orchestrators.base import Orchestrator, TransientError

pytestmark = pytest.mark.django_db


class FakeOrchestrator(Orchestrator):
    """Answers ping() with a fixed text, raises TransientError, or hangs."""

    def __init__(self, backend_name, answer="ping ok, fake", *, fail=None, hang=0.0):
        self.backend_name = backend_name
        self.answer, self.fail, self.hang = answer, fail, hang
        self.pings = 0

    def ping(self):
        self.pings += 1
        if self.hang:
            time.sleep(self.hang)
        if self.fail:
            raise TransientError(self.fail)
        return self.answer

    ensure = start = stop = restart = recreate = delete = status = status_all = (
        volumes_all
    ) = logs = (
        lambda *a, **k: None
    )


class Factories:
    """Replaces the backend constructors; counts how often each is built."""

    def __init__(self):
        self.builds = {"docker": 0, "kubernetes": 0}
        self.make = {
            "docker": lambda: FakeOrchestrator("docker", "ping ok, server 20.10.24"),
            "kubernetes": self._no_kube,
        }

    @staticmethod
    def _no_kube():
        raise TransientError("no in-cluster config, no kubeconfig at /root/.kube/config")

    def factory(self, name):
        def build():
            self.builds[name] += 1
            return self.make[name]()

        return build


@pytest.fixture
def fakes(monkeypatch):
    registry.clear_cache()
    f = Factories()
    monkeypatch.setattr(registry, "_factory", f.factory)
    yield f
    registry.clear_cache()


def test_auto_tries_kubernetes_then_docker_and_persists(fakes):
    found = registry.detect()
    assert found.backend == "docker"
    assert found.source == "detected"
    assert found.lines() == [
        "kubernetes: no in-cluster config, no kubeconfig at /root/.kube/config",
        "docker: ping ok, server 20.10.24",
    ]
    assert Setting.get_str(registry.SETTING_KEY) == "docker"
    assert registry.current_backend_name() == "docker"


def test_kubernetes_wins_when_it_answers(fakes):
    fakes.make["kubernetes"] = lambda: FakeOrchestrator("kubernetes", "namespace claworc ok")
    found = registry.detect()
    assert found.backend == "kubernetes"
    assert [p.backend for p in found.probes] == ["kubernetes"]  # Docker not even tried
    assert fakes.builds["docker"] == 0


def test_nothing_usable_is_none_with_reasons(fakes):
    fakes.make["docker"] = lambda: FakeOrchestrator("docker", fail="Docker not available: boom")
    found = registry.detect()
    assert found.backend == "none"
    assert not found.usable
    assert "docker: Docker not available: boom" in found.lines()
    assert Setting.get_str(registry.SETTING_KEY) == "none"
    with pytest.raises(registry.NoBackendAvailable, match="Docker not available: boom"):
        registry.get_orchestrator()


def test_persisted_choice_skips_detection(fakes):
    Setting.set(registry.SETTING_KEY, "docker")
    orch = registry.get_orchestrator()
    assert orch.backend_name == "docker"
    assert fakes.builds == {"docker": 1, "kubernetes": 0}
    found = registry.detect()
    assert found.source == "setting"
    assert [p.backend for p in found.probes] == ["docker"]
    assert fakes.builds["kubernetes"] == 0


def test_forced_backend_that_cannot_load_is_reported(fakes):
    Setting.set(registry.SETTING_KEY, "kubernetes")
    with pytest.raises(registry.NoBackendAvailable, match="set to kubernetes.*no kubeconfig"):
        registry.get_orchestrator()
    assert registry.current_backend_name() == "kubernetes"


def test_client_is_cached_until_the_setting_or_settings_change(fakes):
    Setting.set(registry.SETTING_KEY, "docker")
    first = registry.get_orchestrator()
    assert registry.get_orchestrator() is first
    assert fakes.builds["docker"] == 1
    with override_settings(CLAWORC_DOCKER_HOST="tcp://10.0.0.1:2375"):
        assert registry.get_orchestrator() is not first
    assert registry.get_orchestrator() is first
    fakes.make["kubernetes"] = lambda: FakeOrchestrator("kubernetes")
    Setting.set(registry.SETTING_KEY, "kubernetes")
    assert registry.get_orchestrator().backend_name == "kubernetes"


def test_redetect_ignores_the_stored_choice(fakes):
    Setting.set(registry.SETTING_KEY, "kubernetes")
    found = registry.detect(redetect=True)
    assert found.backend == "docker"
    assert Setting.get_str(registry.SETTING_KEY) == "docker"


def test_failed_detection_is_not_repeated_for_every_call(fakes):
    fakes.make["docker"] = lambda: FakeOrchestrator("docker", fail="Docker not available: x")
    for _ in range(5):
        with pytest.raises(registry.NoBackendAvailable):
            registry.get_orchestrator()
    assert fakes.builds["docker"] == 1
    # The explicit command always probes afresh.
    registry.detect()
    assert fakes.builds["docker"] == 2


def test_unknown_setting_value_means_auto(fakes, caplog):
    Setting.set(registry.SETTING_KEY, "dokcer")
    assert registry.get_orchestrator().backend_name == "docker"
    assert "names no backend" in caplog.text


def test_hanging_backend_costs_the_timeout_only(fakes):
    fakes.make["docker"] = lambda: FakeOrchestrator("docker", hang=30)
    started = time.monotonic()
    found = registry.detect(timeout=0.3)
    assert time.monotonic() - started < 5
    assert found.backend == "none"
    assert "docker: docker probe did not answer within 0.3 s" in found.lines()


def test_check_reports_reachability(fakes):
    Setting.set(registry.SETTING_KEY, "docker")
    ok = registry.check(timeout=1)
    assert (ok.backend, ok.reachable, ok.detail) == ("docker", True, "ping ok, server 20.10.24")
    fakes.make["docker"] = lambda: FakeOrchestrator("docker", hang=30)
    registry.clear_cache()
    started = time.monotonic()
    dead = registry.check(timeout=0.5)
    assert time.monotonic() - started < 3
    assert (dead.backend, dead.reachable) == ("docker", False)
    assert "did not answer within 0.5 s" in dead.detail


def test_override_is_thread_local(fakes):
    fake = FakeOrchestrator("kubernetes")
    seen = {}
    with registry.override(fake):
        assert registry.get_orchestrator() is fake
        assert registry.current_backend_name() == "kubernetes"
        other = threading.Thread(
            target=lambda: seen.setdefault("other", registry.last_known_backend_name())
        )
        other.start()
        other.join()
    assert seen["other"] == "none"
    assert registry.current_backend_name() == "none"


def test_volume_names_follow_each_backend():
    assert [v[1] for v in registry.volume_names("bot-mybot", "docker")] == [
        "claworc-bot-mybot-clawdbot", "claworc-bot-mybot-homebrew",
        "claworc-bot-mybot-clawd", "claworc-bot-mybot-chrome",
    ]
    assert [v[1] for v in registry.volume_names("bot-mybot", "kubernetes")] == [
        "bot-mybot-clawdbot", "bot-mybot-homebrew", "bot-mybot-clawd", "bot-mybot-chrome",
    ]
