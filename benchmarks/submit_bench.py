"""Submit throughput: `submit_file` end to end against a bare executemany insert.

Generates a JSON Lines file of mixed Chinese and English texts (about 200 characters
each), then runs two child processes on fresh SQLite databases with the same schema:

- submit: read, validate, store and publish to a private redis-server on a Unix socket;
- bare: read and parse the same lines and insert the same job columns with
  sqlite3 executemany, in transactions of the same size, with no validation or Redis.

Each child's peak RSS comes from os.wait4, so the parent's memory is not counted.

    .venv/bin/python benchmarks/submit_bench.py --rows 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS_PER_TRANSACTION = 5000
_ENGLISH = [
    "the", "model", "reads", "every", "comment", "and", "returns", "a", "score", "for",
    "each", "category", "before", "nightly", "export", "runs", "on", "cluster", "with",
    "several", "workers", "per", "host",
]
_CHINESE = "今天的天气很好我们一起去公园散步吧这个产品的质量非常不错价格也合理评论区里有很多人讨论翻译的结果"


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write `rows` JSON lines with an id and a text of about 200 mixed characters.

    Texts are drawn from a pool of random mixes and end with the row number, so every
    text differs while generating a million rows takes seconds, not minutes.
    """
    rng = random.Random(seed)
    pool: list[str] = []
    for _ in range(5000):
        parts: list[str] = []
        length = 0
        while length < 190:
            if rng.random() < 0.5:
                piece = "".join(rng.choice(_CHINESE) for _ in range(rng.randint(4, 12)))
            else:
                piece = " ".join(rng.choice(_ENGLISH) for _ in range(rng.randint(2, 6)))
            parts.append(piece)
            length += len(piece) + 1
        pool.append(" ".join(parts)[:190])
    with path.open("w", encoding="utf-8") as handle:
        for number in range(rows):
            text = f"{pool[rng.randrange(len(pool))]} #{number}"
            handle.write(json.dumps({"id": f"r{number:07d}", "text": text}, ensure_ascii=False))
            handle.write("\n")


def run_child(mode: str, work: Path, data: Path) -> dict[str, float]:
    """Run one measurement in a child process; return its result with peak RSS in MB."""
    command = [sys.executable, __file__, "--child", mode, "--work", str(work), "--data", str(data)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{mode} child failed with status {status}")
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    # On Linux ru_maxrss is in kilobytes.
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def child_submit(work: Path, data: Path) -> dict[str, float]:
    from llmjobs.broker import create_celery_app
    from llmjobs.config import Settings
    from llmjobs.embedded import embedded_redis
    from llmjobs.models.session import Store
    from llmjobs.producer import SubmitOptions, submit_file

    home = work / "submit-home"
    settings = Settings(home=home, database_url=f"sqlite:///{work / 'submit.db'}")
    store = Store(settings.database_url)
    with embedded_redis(home) as url:
        app = create_celery_app(settings, url)
        started = time.perf_counter()
        outcome = submit_file(settings, store, app, data, "moderate", SubmitOptions(actor="bench"))
        elapsed = time.perf_counter() - started
        app.close()
    if not outcome.published:
        raise SystemExit(f"publishing failed: {outcome.publish_error}")
    return {"rows": outcome.jobs, "seconds": elapsed, "chunks": outcome.chunks}


def child_bare(work: Path, data: Path) -> dict[str, float]:

    from datetime import datetime, timezone

    from llmjobs.models.migrate import upgrade

    path = work / "bare.db"
    upgrade(f"sqlite:///{path}")
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "INSERT INTO batches (id, kind, params, status, priority, total, rejected, created_at) "
        "VALUES ('bare', 'moderate', '{}', 'queued', 'normal', 0, 0, ?)",
        (datetime.now(timezone.utc).isoformat(),),
    )
    statement = (
        "INSERT INTO jobs (batch_id, item_id, seq, line, input_text, input_sha256, params, "
        "priority, status, attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, NULL, 3, 'queued', 0, ?)"
    )
    started = time.perf_counter()
    rows = 0
    pending: list[tuple[object, ...]] = []
    created_at = datetime.now(timezone.utc).isoformat()
    with data.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            row = json.loads(raw)
            text = row["text"]
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            pending.append(("bare", row["id"], line_number, line_number, text, digest, created_at))
            if len(pending) == ROWS_PER_TRANSACTION:
                _insert(connection, statement, pending)
                rows += len(pending)
                pending = []
    if pending:
        _insert(connection, statement, pending)
        rows += len(pending)
    elapsed = time.perf_counter() - started
    connection.close()
    return {"rows": rows, "seconds": elapsed}


def _insert(connection: sqlite3.Connection, statement: str, rows: list[tuple[object, ...]]) -> None:
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(statement, rows)
    connection.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, help="Folder for the data and databases "
                        "[default: a new temporary folder].")
    parser.add_argument("--child", choices=["submit", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        measure = child_submit if args.child == "submit" else child_bare
        print(json.dumps(measure(args.work, args.data)))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="llmjobs-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "rows.jsonl"
    started = time.perf_counter()
    generate(data, args.rows)
    print(f"generated {args.rows} rows ({data.stat().st_size / 1e6:.0f} MB) in "
          f"{time.perf_counter() - started:.1f} s at {data}")

    bare = run_child("bare", work, data)
    submit = run_child("submit", work, data)
    bare_rate = bare["rows"] / bare["seconds"]
    submit_rate = submit["rows"] / submit["seconds"]
    print(f"bare executemany: {bare['rows']:.0f} rows in {bare['seconds']:.1f} s = "
          f"{bare_rate:,.0f} rows/s, peak RSS {bare['peak_rss_mb']:.0f} MB")
    print(f"submit end to end: {submit['rows']:.0f} rows in {submit['seconds']:.1f} s = "
          f"{submit_rate:,.0f} rows/s, {submit['chunks']:.0f} chunks, "
          f"peak RSS {submit['peak_rss_mb']:.0f} MB")
    print(f"ratio submit / bare: {submit_rate / bare_rate:.0%}")


if __name__ == "__main__":
    main()
