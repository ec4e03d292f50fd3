import pytest

from orchestrators.registry import override
from tests.fakes import FakeOrchestrator, eager_tasks


@pytest.fixture
def orch():
    """A fake orchestrator the registry hands out for the duration of the test."""
    with override(FakeOrchestrator()) as fake:
        yield fake


@pytest.fixture
def run_tasks(django_capture_on_commit_callbacks):
    """Commit callbacks (the enqueues) run, and the tasks they enqueue run in-process."""

    def run(fn, *args, **kwargs):
        with eager_tasks(), django_capture_on_commit_callbacks(execute=True) as callbacks:
            result = fn(*args, **kwargs)
        return result, callbacks

    return run
