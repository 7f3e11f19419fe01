"""Logging for worker processes: one line per record, with the process id."""

from __future__ import annotations

import logging
import sys


def configure_worker_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # Celery logs every received and succeeded task; the consumer's per-chunk line is enough.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
    logging.getLogger("celery.worker.strategy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
