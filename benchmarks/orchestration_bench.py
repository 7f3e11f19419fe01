"""Orchestration overhead: llmjobs against one Celery task per item, on a tiny classifier.

Both systems moderate the same N texts with the same tiny random-weight classifier, so
the model costs little and the figures measure queueing, claiming and storing. Each run
starts its own redis-server on a Unix socket and uses fresh SQLite files:

- llmjobs: `submit_rows` stores the jobs and publishes chunks of 64 job ids; then one
  `llmjobs worker --device cpu --kinds moderate` process runs them into the store.
- naive (orchestration_naive.py): `apply_async` once per item. Then one Celery worker
  (solo pool) runs the model on one text per task and commits one result row per task.

The queue is filled before the worker starts, so Redis memory is read at its peak (after
publishing, before any worker), and the worker's start-up (imports, model load) is left
out for both systems: end to end = submit time + time from the worker's "ready" log line
to the last result stored, read from the store itself.

With --queries, the llmjobs databases of the smallest and largest size are kept, 1% of
their jobs are marked failed, and the first page (100 rows) of three queries is timed on
each: results --status failed, results --category C --min-score X, and status.

    .venv/bin/python benchmarks/orchestration_bench.py --sizes 10000 --llmjobs-sizes 100000 \
        --runs 3 --naive-runs 10000=2 --llmjobs-runs 100000=1 --queries \
        --output benchmarks/orchestration_results.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(BENCHMARKS))

from orchestration_queries import QueryReport, run_queries  # noqa: E402

# Maximum wait for one run's worker to drain its queue before the run counts as failed.
DEFAULT_RUN_TIMEOUT_S = 1800
READY_MARKER = " ready."

_ENGLISH = [
    "the", "model", "reads", "every", "comment", "and", "returns", "a", "score", "for", "each",
    "category", "before", "nightly", "export", "you", "are", "wrong", "about", "this", "product",
]
_CHINESE = "今天的天气很好我们一起去公园散步吧这个产品的质量非常不错价格也合理评论区里有很多人讨论翻译的结果"


def text_for(number: int) -> str:
    """Return a mixed Chinese and English comment of 10 to 60 characters, unique per number."""
    rng = random.Random(number)
    target = rng.randint(10, 60)
    parts: list[str] = []
    length = 0
    while length < target:
        if rng.random() < 0.5:
            piece = "".join(rng.choice(_CHINESE) for _ in range(rng.randint(4, 12)))
        else:
            piece = " ".join(rng.choice(_ENGLISH) for _ in range(rng.randint(2, 6)))
        parts.append(piece)
        length += len(piece) + 1
    return f"{' '.join(parts)[:target]} #{number}"


def build_checkpoint(folder: Path) -> Path:
    """Build, once, a classifier smaller than the default tiny one, so the model costs little.

    The default tiny classifier (hidden size 64, 2 layers) spends about 2 ms per item on
    this benchmark's CPU; this one (hidden size 16, 1 layer) about 0.6 ms in micro-batches.
    """
    from llmjobs.checkpoints.tiny import MANIFEST, build_classifier
    from llmjobs.checkpoints.tokenizer import train_byte_level_bpe

    target = folder / "classifier-h16-l1"
    if not (target / MANIFEST).is_file():
        build_classifier(target, train_byte_level_bpe(), hidden_size=16, layers=1, heads=2)
    return target


def worker_environment(base: dict[str, str]) -> dict[str, str]:
    """Return base with one torch thread: with 2 cores, 2 threads ran 3 times slower under load."""
    env = dict(base)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env


def rows(count: int) -> Iterator[dict[str, str]]:
    for number in range(count):
        yield {"id": f"c{number:07d}", "text": text_for(number)}


# Servers and processes.


class RedisServer:
    """A private redis-server on a Unix socket, with no persistence."""

    def __init__(self, folder: Path) -> None:
        from llmjobs.embedded import find_redis_server

        folder.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "redis.sock"
        self.process = subprocess.Popen(
            [find_redis_server(), "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(folder), "--save", "",
             "--appendonly", "no", "--loglevel", "warning",
             "--logfile", str(folder / "redis.log")],
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self.client = self._connect()

    def _connect(self) -> Any:
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.process.returncode}")
            if self.socket.exists():
                client = redis.Redis(unix_socket_path=str(self.socket))
                try:
                    client.ping()
                    return client
                except redis.RedisError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not respond on {self.socket} within 20 s")

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class WorkerProcess:
    """A worker command in its own session, logging to a file; stopped by its pid."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path,
                 cwd: Path | None = None) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 300) -> float:
        """Return time.time() at which the Celery worker logged that it is ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if READY_MARKER in self.log_path.read_text(errors="replace"):
                return time.time()
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; see {self.log_path}")
            time.sleep(0.02)
        raise RuntimeError(f"worker not ready after {timeout_s:.0f} s; see {self.log_path}")

    def stop(self, profiled: bool = False) -> None:
        # py-spy writes its profile on SIGINT, so it is stopped first and the worker after.
        # Both signals go only to processes of the session this object started.
        if profiled and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str,
             interval_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# One run of each system.


@dataclass
class RunResult:
    system: str
    store: str
    items: int
    submit_s: float
    drain_s: float
    redis_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return self.submit_s + self.drain_s

    @property
    def items_per_s(self) -> float:
        return self.items / self.total_s


@dataclass
class Bench:
    work: Path
    checkpoint: Path
    timeout_s: float
    py_spy: Path | None = None

    def llmjobs_run(self, items: int, label: str, database_url: str | None = None,
                    keep: bool = False) -> tuple[RunResult, str | None]:
        """Submit and drain one llmjobs batch; return the result and the batch id."""
        from llmjobs.broker import create_celery_app
        from llmjobs.config import Settings
        from llmjobs.models.session import Store
        from llmjobs.models.tables import Batch
        from llmjobs.producer import SubmitOptions, submit_rows

        folder = self.work / label
        folder.mkdir(parents=True)
        redis_server = RedisServer(folder / "redis")
        url = database_url or f"sqlite:///{folder / 'llmjobs.db'}"
        env = {key: value for key, value in os.environ.items() if not key.startswith("LLMJOBS_")}
        env.update({
            "LLMJOBS_HOME": str(folder / "home"),
            "LLMJOBS_DATABASE_URL": url,
            "LLMJOBS_BROKER_URL": f"unix://{redis_server.socket}",
            "LLMJOBS_CHECKPOINT_MODERATE": str(self.checkpoint),
        })
        env = worker_environment(env)
        worker = None
        try:
            settings = Settings.load(environ=env)
            store = Store(url)
            app = create_celery_app(settings, env["LLMJOBS_BROKER_URL"])
            empty = redis_server.used_memory()

            # Submit: validate, store and publish every row, with no worker running yet.
            started = time.perf_counter()
            outcome = submit_rows(settings, store, app, rows(items), "moderate",
                                  SubmitOptions(actor="bench", new=True))
            submit_s = time.perf_counter() - started
            app.close()
            if not outcome.published or outcome.jobs != items:
                raise RuntimeError(f"submit stored {outcome.jobs} jobs, published={outcome.published}")
            redis_bytes = redis_server.used_memory() - empty

            # Drain: start the worker and wait until the store shows the batch finished.
            command = [sys.executable, "-m", "llmjobs.cli.main", "worker", "--device", "cpu",
                       "--kinds", "moderate"]
            if self.py_spy is not None:
                command = self._with_py_spy(command, f"{label}.txt")
            worker = WorkerProcess(command, env, folder / "worker.log", cwd=REPO)
            ready_at = worker.wait_ready()

            def finished() -> Any:
                with store.read() as session:
                    batch = session.get(Batch, outcome.batch_id)
                    return batch.finished_at if batch is not None and batch.finished_at else None

            finished_at = wait_for(finished, self.timeout_s, f"batch {outcome.batch_id}")
            drain_s = finished_at.timestamp() - ready_at
            store.dispose()
            result = RunResult("llmjobs", store.engine.dialect.name, items, submit_s, drain_s,
                               redis_bytes, {"chunks": outcome.chunks})
        finally:
            if worker is not None:
                worker.stop(profiled=self.py_spy is not None)
            redis_server.stop()
        if not keep and database_url is None:
            shutil.rmtree(folder, ignore_errors=True)
        return result, outcome.batch_id

    def naive_run(self, items: int, label: str) -> RunResult:
        """Send one task per item, then drain them with the naive worker."""
        import orchestration_naive as naive

        folder = self.work / label
        folder.mkdir(parents=True)
        redis_server = RedisServer(folder / "redis")
        broker_url = f"redis+socket://{redis_server.socket}"
        results_path = folder / "naive.db"
        env = dict(os.environ)
        env.update({
            naive.BROKER_ENV: broker_url,
            naive.RESULTS_DB_ENV: str(results_path),
            naive.CHECKPOINT_ENV: str(self.checkpoint),
            "PYTHONPATH": str(BENCHMARKS),
        })
        env = worker_environment(env)
        worker = None
        try:
            app = naive.create_app(broker_url)
            # The module's own app reads its broker from the environment, so the producer
            # registers the same task name on an app pointed at this run's Redis.
            task = app.task(name=naive.TASK_NAME)(naive.moderate.run)
            empty = redis_server.used_memory()

            started = time.perf_counter()
            with app.producer_or_acquire() as producer:
                for row in rows(items):
                    task.apply_async(args=[row["id"], row["text"]], producer=producer)
            submit_s = time.perf_counter() - started
            redis_bytes = redis_server.used_memory() - empty
            app.close()

            command = [sys.executable, "-m", "celery", "-A", "orchestration_naive", "worker",
                       "--pool", "solo", "--queues", naive.QUEUE, "--loglevel", "INFO",
                       "--without-gossip", "--without-mingle", "--without-heartbeat"]
            if self.py_spy is not None:
                command = self._with_py_spy(command, f"{label}.txt")
            worker = WorkerProcess(command, env, folder / "worker.log", cwd=BENCHMARKS)
            ready_at = worker.wait_ready()

            def last_result() -> float | None:
                if not results_path.exists():
                    return None
                connection = sqlite3.connect(results_path, timeout=60)
                try:
                    count, last = connection.execute(
                        "SELECT count(*), max(created_at) FROM results").fetchone()
                except sqlite3.OperationalError:
                    return None
                finally:
                    connection.close()
                return last if count >= items else None

            # Counting the results table is O(N), so poll less often on large runs.
            interval_s = 0.25 if items <= 20_000 else 2.0
            finished_at = wait_for(last_result, self.timeout_s, "naive results", interval_s)
            drain_s = finished_at - ready_at
        finally:
            if worker is not None:
                worker.stop(profiled=self.py_spy is not None)
            redis_server.stop()
        shutil.rmtree(folder, ignore_errors=True)
        return RunResult("naive", "sqlite", items, submit_s, drain_s, redis_bytes)

    def _with_py_spy(self, command: list[str], name: str) -> list[str]:
        assert self.py_spy is not None
        self.py_spy.mkdir(parents=True, exist_ok=True)
        py_spy = str(Path(sys.executable).with_name("py-spy"))
        return [py_spy, "record", "--subprocesses", "--format", "raw", "--rate", "50",
                "--output", str(self.py_spy / name), "--", *command]


# Reporting.


def machine_lines(postgres_url: str | None) -> list[str]:
    import celery
    import kombu
    import sqlalchemy
    import torch
    import transformers

    from llmjobs.embedded import find_redis_server

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    redis_version = subprocess.run([find_redis_server(), "--version"], capture_output=True,
                                   text=True, check=True).stdout.split()[2].removeprefix("v=")
    lines = [
        f"- machine: {cpu}, {os.cpu_count()} cores, {ram_gib:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}",
        f"- versions: Python {platform.python_version()}, torch {torch.__version__} "
        f"(workers run with OMP_NUM_THREADS=1), transformers {transformers.__version__}, celery "
        f"{celery.__version__}, kombu {kombu.__version__}, SQLAlchemy {sqlalchemy.__version__}, "
        f"redis-server {redis_version}, SQLite {sqlite3.sqlite_version}",
    ]
    if postgres_url:
        from sqlalchemy import create_engine, text

        from llmjobs.models.session import normalise_database_url

        engine = create_engine(normalise_database_url(postgres_url))
        with engine.connect() as connection:
            lines.append(f"- PostgreSQL: {connection.execute(text('SHOW server_version')).scalar()}")
        engine.dispose()
    return lines


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """Return the range of values as a percentage of their median."""
    if len(values) < 2:
        return "1 run"
    middle = median(values)
    return f"±{(max(values) - min(values)) / 2 / middle:.0%} ({len(values)} runs)"


def overhead_table(results: list[RunResult]) -> list[str]:
    lines = [
        "| N | system | store | submit s | drain s | end to end s | items/s | spread | "
        "Redis bytes/item | llmjobs ÷ naive |",
        "|---:|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    groups: dict[tuple[int, str, str], list[RunResult]] = {}
    for result in results:
        groups.setdefault((result.items, result.system, result.store), []).append(result)
    naive_rate = {
        items: median([r.items_per_s for r in runs])
        for (items, system, _), runs in groups.items() if system == "naive"
    }
    for (items, system, store), runs in sorted(groups.items()):
        rate = median([r.items_per_s for r in runs])
        ratio = ""
        if system == "llmjobs" and items in naive_rate:
            ratio = f"{rate / naive_rate[items]:.1f}×"
        lines.append(
            f"| {items:,} | {system} | {store} | {median([r.submit_s for r in runs]):.1f} | "
            f"{median([r.drain_s for r in runs]):.1f} | {median([r.total_s for r in runs]):.1f} | "
            f"{rate:,.0f} | {spread([r.items_per_s for r in runs])} | "
            f"{median([r.redis_bytes / r.items for r in runs]):.1f} | {ratio} |"
        )
    return lines


def growth_lines(results: list[RunResult]) -> list[str]:
    runs: dict[int, list[float]] = {}
    for result in results:
        if result.system == "llmjobs" and result.store == "sqlite":
            runs.setdefault(result.items, []).append(result.total_s / result.items * 1e6)
    per_item = {items: median(values) for items, values in runs.items()}
    if not per_item:
        return []
    smallest = min(per_item)
    lines = ["| N | µs per item, end to end | ÷ N = " f"{smallest:,} |", "|---:|---:|---:|"]
    for items in sorted(per_item):
        lines.append(f"| {items:,} | {per_item[items]:.0f} | "
                     f"{per_item[items] / per_item[smallest]:.2f} |")
    return lines


def report(args: argparse.Namespace, results: list[RunResult],
           queries: list[QueryReport]) -> str:
    lines = ["## Orchestration results", ""]
    lines += machine_lines(args.postgres)
    lines += [
        f"- command: `{' '.join(['.venv/bin/python', 'benchmarks/orchestration_bench.py', *sys.argv[1:]])}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
        "",
        "Throughput, medians of the runs (spread = half the range, as a share of the median):",
        "",
        *overhead_table(results),
        "",
        "Growth, llmjobs on SQLite:",
        "",
        *growth_lines(results),
    ]
    if queries:
        lines += ["", "Queries, first page of 100 rows, medians in ms:", ""]
        from orchestration_queries import query_table

        lines += query_table(queries)
    return "\n".join(lines) + "\n"


def parse_counts(text: str, default: int) -> Callable[[int], int]:
    """Parse "100000=1,1000000=1" into a function from size to run count."""
    table = {}
    for part in filter(None, text.split(",")):
        size, _, count = part.partition("=")
        table[int(size)] = int(count)
    return lambda size: table.get(size, default)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000",
                        help="N for which both systems run, comma-separated")
    parser.add_argument("--llmjobs-sizes", default="",
                        help="more N for llmjobs alone (growth), comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs per system and N")
    parser.add_argument("--naive-runs", default="100000=1",
                        help="run counts of the naive system per N, as N=COUNT,... "
                             "[default: 100000=1, else --runs]")
    parser.add_argument("--llmjobs-runs", default="1000000=1",
                        help="run counts of llmjobs per N, as N=COUNT,... "
                             "[default: 1000000=1, else --runs]")
    parser.add_argument("--skip-naive", action="store_true", help="run llmjobs alone")
    parser.add_argument("--queries", action="store_true",
                        help="time results and status queries on the smallest and largest batch")
    parser.add_argument("--postgres", metavar="URL",
                        help="also run llmjobs on PostgreSQL: a server URL whose user may "
                             "CREATE DATABASE; each run gets a new database, dropped after")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="record every worker with py-spy into DIR (raw collapsed stacks)")
    parser.add_argument("--timeout-s", type=float, default=DEFAULT_RUN_TIMEOUT_S,
                        help="maximum wait for one run's worker to drain its queue, in seconds")
    parser.add_argument("--work", type=Path, help="folder for databases, logs and the checkpoint "
                        "[default: a new temporary folder, deleted at the end]")
    parser.add_argument("--output", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args()

    sizes = [int(size) for size in args.sizes.split(",") if size]
    growth = [int(size) for size in args.llmjobs_sizes.split(",") if size]
    naive_runs = parse_counts(args.naive_runs, args.runs)
    llmjobs_runs = parse_counts(args.llmjobs_runs, args.runs)
    work = args.work or Path(tempfile.mkdtemp(prefix="llmjobs-orch-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = build_checkpoint(work / "checkpoints")
    bench = Bench(work, checkpoint, args.timeout_s, args.py_spy)

    all_sizes = sorted(set(sizes + growth))
    query_sizes = {min(all_sizes), max(all_sizes)} if args.queries else set()
    results: list[RunResult] = []
    kept: dict[int, tuple[Path, str]] = {}
    stamp = time.strftime("%H%M%S")
    for items in all_sizes:
        for run in range(llmjobs_runs(items)):
            keep = items in query_sizes and run == 0
            label = f"{stamp}-llmjobs-{items}-{run}"
            result, batch_id = bench.llmjobs_run(items, label, keep=keep)
            results.append(result)
            print(json.dumps(result.__dict__ | {"items_per_s": round(result.items_per_s)}),
                  flush=True)
            if keep and batch_id is not None:
                kept[items] = (work / label / "llmjobs.db", batch_id)
        if args.postgres:
            from orchestration_queries import fresh_postgres_database

            for run in range(llmjobs_runs(items)):
                with fresh_postgres_database(args.postgres) as url:
                    result, _ = bench.llmjobs_run(items, f"{stamp}-pg-{items}-{run}", url)
                results.append(result)
                print(json.dumps(result.__dict__), flush=True)
        if items in sizes and not args.skip_naive:
            for run in range(naive_runs(items)):
                result = bench.naive_run(items, f"{stamp}-naive-{items}-{run}")
                results.append(result)
                print(json.dumps(result.__dict__ | {"items_per_s": round(result.items_per_s)}),
                      flush=True)

    queries = run_queries(kept) if kept else []
    text = report(args, results, queries)
    print(text)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
