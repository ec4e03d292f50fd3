"""Fixtures for the end-to-end tests: a stack of real processes on Redis or the embedded broker.

Workers and the web process must share one database with each other and with the test, so these
tests do not use pytest-django's (in-memory) test database: each stack gets a SQLite file in its
temporary directory, or a fresh PostgreSQL database, migrated by `manage.py migrate`.
"""

import pytest

from tests.integration.support import (
    Stack,
    docker_cleanup,
    postgres_database,
    redis_broker,
    redis_drop_queue,
)


@pytest.fixture
def make_stack(tmp_path, docker_client, agent_image, request):
    """make_stack(broker="redis"|"sqla", database="sqlite"|"postgres", ...) -> prepared Stack."""
    stacks, cleanups = [], []

    def make(*, broker: str = "redis", database: str = "sqlite", **kwargs) -> Stack:
        if broker == "redis":
            broker_url = redis_broker(request.getfixturevalue("redis_url"))
        else:
            broker_url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
        if database == "postgres":
            db = postgres_database(request.getfixturevalue("postgres_url"))
            database_url = db.__enter__()
            cleanups.append(lambda: db.__exit__(None, None, None))
        else:
            database_url = f"sqlite:///{tmp_path / 'claworc.sqlite3'}"
        stack = Stack(tmp_path, broker=broker_url, database_url=database_url,
                      agent_image=agent_image, **kwargs)
        stacks.append(stack)
        if broker == "redis":
            cleanups.append(lambda: redis_drop_queue(broker_url, stack.queue))
        stack.prepare()
        return stack

    yield make
    for stack in stacks:
        stack.stop()
        docker_cleanup(docker_client, stack.prefix)
    for cleanup in reversed(cleanups):
        cleanup()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # On failure, the stack's process logs are the first thing anyone needs.
    if report.failed and call.when == "call":
        tmp = item.funcargs.get("tmp_path")
        if tmp is not None:
            for log in sorted(tmp.glob("*.log")):
                report.sections.append((f"stack {log.stem} log",
                                        log.read_text(errors="replace")[-8000:]))
    return report
