"""The naive baseline of the orchestration benchmark: one Celery task per item.

This is how a Celery user commonly writes bulk inference: the producer calls
`apply_async` once per item, and each task runs the model on its one text and inserts
one result row through a SQLAlchemy session, committing each row. The model loads once
per worker process, when the worker starts, so loading is not counted as processing.

Choices, kept as generous to the baseline as the pattern allows:
- solo pool (no prefork parent/child round trip per task), JSON serializer, no result
  backend, Celery's default prefetch and early acknowledgement;
- the results file uses the same SQLite pragmas as the llmjobs store (WAL,
  synchronous=NORMAL), so neither system pays an fsync per commit.

The worker runs as `celery -A orchestration_naive worker` with benchmarks/ on
PYTHONPATH, configured by the environment variables below.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from celery import Celery
from celery.signals import worker_init
from sqlalchemy import Float, Integer, String, Text, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

# Set by the benchmark for the worker process; the producer passes broker_url directly.
BROKER_ENV = "NAIVE_BROKER_URL"
RESULTS_DB_ENV = "NAIVE_RESULTS_DB"
CHECKPOINT_ENV = "NAIVE_CHECKPOINT"

TASK_NAME = "naive.moderate"
QUEUE = "naive"


class Base(DeclarativeBase):
    pass


class NaiveResult(Base):
    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(String(200))
    # JSON text of the label scores.
    output: Mapped[str] = mapped_column(Text)
    # Unix time of the insert, so the benchmark can read when the last result was stored.
    created_at: Mapped[float] = mapped_column(Float)


def create_app(broker_url: str | None = None) -> Celery:
    app = Celery("naive", broker=broker_url or os.environ.get(BROKER_ENV), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=QUEUE,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


def create_results_engine(path: str) -> Any:
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    Base.metadata.create_all(engine)
    return engine


app = create_app()

# Filled once per worker process by load_model.
_model: dict[str, Any] = {}


@worker_init.connect
def load_model(**_: Any) -> None:
    """Load the checkpoint and open the results database before the worker consumes."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    checkpoint = os.environ[CHECKPOINT_ENV]
    _model["tokenizer"] = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    model.eval()
    _model["model"] = model
    _model["labels"] = [model.config.id2label[index] for index in range(model.config.num_labels)]
    _model["torch"] = torch
    _model["engine"] = create_results_engine(os.environ[RESULTS_DB_ENV])


@app.task(name=TASK_NAME)
def moderate(item_id: str, text: str) -> None:
    torch = _model["torch"]
    encoded = _model["tokenizer"](text, truncation=True, max_length=512, return_tensors="pt")
    with torch.inference_mode():
        scores = _model["model"](**encoded).logits.float().sigmoid()[0].tolist()
    output = dict(zip(_model["labels"], (round(score, 6) for score in scores), strict=True))
    with Session(_model["engine"]) as session:
        session.add(NaiveResult(item_id=item_id, output=json.dumps(output), created_at=time.time()))
        session.commit()
