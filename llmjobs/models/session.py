"""Engines and sessions for SQLite (the embedded default) and PostgreSQL (psycopg 3).

SQLite runs in WAL mode with a busy timeout, and every write transaction starts with
BEGIN IMMEDIATE. A writer then takes the write lock when its transaction starts, where
the busy timeout applies. Upgrading a read lock later is what raises "database is locked"
under several writer processes. Read sessions start deferred, so in WAL mode readers do
not wait for writers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from llmjobs.config import redact_url
from llmjobs.errors import StoreError

log = logging.getLogger(__name__)

SQLITE_CACHE_KIB = 64 * 1024
SQLITE_BUSY_TIMEOUT_MS = 60_000
_READ_ONLY = "llmjobs_read_only"


def normalise_database_url(url: str) -> str:
    """Select the psycopg 3 driver for plain postgresql:// URLs."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def create_store_engine(url: str) -> Engine:
    """Create an engine configured for llmjobs' transaction rules on either backend."""
    url = normalise_database_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    # pool_pre_ping replaces connections that a database restart has closed.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Page cache per connection, in KiB (negative). The default is 2 MiB, far smaller than
        # the job, result and score indexes of a big batch (see benchmarks/README.md).
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


class Store:
    """The SQL store: one engine per process, and session scopes that own transactions.

    Create a Store after a worker process has started (never before fork), so that no
    connection is shared between processes.
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = normalise_database_url(url)
        self.engine = create_store_engine(self.url)
        self.pid = os.getpid()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False
        )
        if migrate:
            self.ensure_schema()

    @property
    def sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def ensure_schema(self) -> None:
        """Migrate a fresh SQLite database automatically; require `db upgrade` elsewhere."""
        from llmjobs.models.migrate import current_revision, head_revision, upgrade

        try:
            current = current_revision(self.engine)
        except OperationalError as error:
            raise StoreError(
                f"cannot open database {redact_url(self.url)}: {error.orig}"
            ) from None
        if current == head_revision():
            return
        if self.sqlite:
            log.info("Migrating SQLite database %s to the current schema.", redact_url(self.url))
            upgrade(self.url)
            return
        if current is None and not inspect(self.engine).get_table_names():
            raise StoreError(
                f"database {redact_url(self.url)} has no llmjobs tables; run `llmjobs db upgrade`"
            )
        raise StoreError(
            f"database {redact_url(self.url)} is at schema revision {current!r}, expected "
            f"{head_revision()!r}; run `llmjobs db upgrade`"
        )

    @contextmanager
    def write(self) -> Iterator[Session]:
        """Open a session whose transaction commits on success and rolls back on error."""
        self._check_pid()
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Open a session for queries; on SQLite it never takes the write lock."""
        self._check_pid()
        with self._read_sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    def _check_pid(self) -> None:
        if os.getpid() != self.pid:
            raise StoreError(
                "a Store was created before fork and used in a child process; "
                "create the Store after the process starts"
            )
