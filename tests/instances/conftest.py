import pytest
from django.contrib.auth.models import User

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


@pytest.fixture
def staff(client):
    """A signed-in superuser (files that need a narrower user define their own `staff`)."""
    user = User.objects.create_superuser("root-t4", password="pw-t4-long-enough")
    client.force_login(user)
    return user
