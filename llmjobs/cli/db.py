"""`llmjobs db`: schema migrations and the audit trail check."""

from __future__ import annotations

import click

from llmjobs.cli.common import EXIT_FAILED, CliContext, json_option, pass_cli, print_json
from llmjobs.config import redact_url
from llmjobs.models.audit import verify_chain
from llmjobs.models.migrate import upgrade
from llmjobs.models.session import Store


@click.group("db")
def db_group() -> None:
    """Manage the database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
@pass_cli
def db_upgrade(context: CliContext, revision: str) -> None:
    """Migrate the database to the current schema (safe to run repeatedly)."""
    url = context.settings.database_url
    upgrade(Store(url, migrate=False).url, revision)
    click.echo(f"Database {redact_url(url)} is at revision {revision}.")


@click.group("audit")
def audit_group() -> None:
    """Check the audit trail."""


@audit_group.command("verify")
@json_option
@pass_cli
def audit_verify(context: CliContext, as_json: bool) -> None:
    """Recompute the audit trail's hash chain; exit 1 if any event was edited or removed."""
    with context.store.read() as session:
        report = verify_chain(session)
    if as_json:
        print_json({"ok": report.ok, "checked": report.checked, "first_bad_id": report.first_bad_id,
                    "reason": report.reason})
    elif report.ok:
        click.echo(f"Audit trail intact: {report.checked} events checked.")
    else:
        click.echo(
            f"Audit trail broken at event {report.first_bad_id}: {report.reason} "
            f"({report.checked} events before it are intact).",
            err=True,
        )
    if not report.ok:
        raise SystemExit(EXIT_FAILED)


def register(cli: click.Group) -> None:
    cli.add_command(db_group)
    cli.add_command(audit_group)
