"""Alembic environment for llmjobs; the URL comes from llmjobs' settings, never from a file."""

from __future__ import annotations

from alembic import context

from llmjobs.models import (
    pipeline_tables,  # noqa: F401  (registers the pipeline source tables)
    tables,  # noqa: F401  (registers the tables on Base.metadata)
)
from llmjobs.models.base import Base
from llmjobs.models.session import create_store_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    # Offline mode prints SQL for a DBA to review and apply by hand.
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_store_engine(url)
    with engine.connect() as connection:
        # render_as_batch: SQLite cannot ALTER most things, so Alembic rebuilds tables.
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    # A migration is a one-off, so no pooled connection should outlive it.
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
