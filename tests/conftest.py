"""Fixtures for real servers: redis-server, PostgreSQL, and a database per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import (
    PostgresServer,
    RedisServer,
    find_postgres_bin,
    find_redis_server,
    require_servers,
)

SHARED_DATA = Path(
    os.environ.get("LLMJOBS_SHARED_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
_database_numbers = itertools.count()


def _missing(reason: str) -> None:
    if require_servers():
        pytest.fail(f"{reason} (LLMJOBS_REQUIRE_SERVERS=1 forbids skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real public data sets, read in place."""
    if not SHARED_DATA.is_dir():
        _missing(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if find_redis_server() is None:
        _missing("redis-server not found")
    # A short path: Unix socket paths are limited to about 107 bytes.
    server = RedisServer(Path(os.path.join("/tmp", f"llmjobs-test-redis-{os.getpid()}")))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A flushed Redis for one test, as a unix:// URL."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.flush()
    yield redis_server.url
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) not found")
    server = PostgresServer(bin_dir)  # type: ignore[arg-type]
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database for one test, on SQLite and on PostgreSQL."""
    from llmjobs.models.migrate import upgrade

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'llmjobs.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database(f"llmjobs_test_{os.getpid()}_{next(_database_numbers)}")
    upgrade(url)
    return url


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'llmjobs.db'}"


@pytest.fixture()
def llmjobs_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty LLMJOBS_HOME with every LLMJOBS_* variable cleared."""
    for name in list(os.environ):
        if name.startswith("LLMJOBS_") and name != "LLMJOBS_REQUIRE_SERVERS":
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("LLMJOBS_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random checkpoints for every kind, built once per test session."""
    from llmjobs.checkpoints.tiny import ensure_tiny_checkpoints

    return ensure_tiny_checkpoints(tmp_path_factory.mktemp("tiny-home"))


@pytest.fixture()
def checkpoint_env(tiny_checkpoints: dict[str, Path]) -> dict[str, str]:
    """LLMJOBS_CHECKPOINT_* variables pointing at the session's tiny checkpoints."""
    return {f"LLMJOBS_CHECKPOINT_{kind.upper()}": str(path) for kind, path in tiny_checkpoints.items()}
