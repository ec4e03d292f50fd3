import pytest

from orchestrators.registry import override
from tests.fakes import FakeOrchestrator


@pytest.fixture
def orch():
    """A fake orchestrator the registry hands out for the duration of the test."""
    with override(FakeOrchestrator()) as fake:
        yield fake
