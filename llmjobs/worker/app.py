"""One worker process: load the checkpoints once, register the chunk task, run Celery.

Call `run_worker` only in a process whose CUDA_VISIBLE_DEVICES is already set: the
launcher does that before it starts the process, and torch is imported only here.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import task_received

from llmjobs.broker import RUN_CHUNK_TASK, create_celery_app, publish_chunks, queue_name
from llmjobs.config import Settings, redact_url
from llmjobs.errors import WorkerError
from llmjobs.models.base import Priority
from llmjobs.models.session import Store
from llmjobs.worker.claims import reserve_jobs
from llmjobs.worker.consumer import ChunkConsumer
from llmjobs.worker.faults import Faults
from llmjobs.worker.heartbeat import Heartbeat
from llmjobs.worker.reaper import Reaper
from llmjobs.worker.watchdog import Watchdog

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    settings: Settings
    broker_url: str
    app: Celery
    store: Store
    consumer: ChunkConsumer
    reaper: Reaper
    node_name: str
    device: str
    kinds: dict[str, Any]


def node_name_for(gpu_index: int | None) -> str:
    """Celery node name; it carries the GPU index so Flower and logs show which GPU is which."""
    device = f"gpu{gpu_index}" if gpu_index is not None else "cpu"
    return f"llmjobs-{device}-{os.getpid()}@{socket.gethostname()}"


def stop_requested() -> bool:
    """True once Celery received SIGTERM (warm shutdown) or SIGQUIT (cold shutdown)."""
    from celery.worker import state

    return state.should_stop is not None or state.should_terminate is not None


def build_runtime(
    settings: Settings, broker_url: str, kind_names: Sequence[str], device: str,
    gpu_index: int | None,
) -> WorkerRuntime:
    """Open the store, load every kind's checkpoint, and wire the consumer's helpers."""
    from llmjobs.worker.kinds.registry import create_kind

    node_name = node_name_for(gpu_index)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    store = Store(settings.database_url)
    kinds = {name: create_kind(name, settings, device) for name in kind_names}
    app = create_celery_app(settings, broker_url)

    def publish(kind: str, batch_id: str, job_ids: Sequence[int], priority: Priority) -> None:
        publish_chunks(app, kind, batch_id, job_ids, priority=Priority(priority),
                       chunk_size=settings.chunk_size)

    watchdog = Watchdog(store, node_name, settings.generation_timeout_s, settings.watchdog_grace_s)
    heartbeat = Heartbeat(store, settings.lease_s, node_name)
    consumer = ChunkConsumer(
        store, kinds, settings, node_name, stop_requested=stop_requested,
        faults=Faults.from_env(), watchdog=watchdog, heartbeat=heartbeat,
    )
    reaper = Reaper(store, settings, publish, node_name)
    runtime = WorkerRuntime(settings, broker_url, app, store, consumer, reaper, node_name,
                            device, kinds)
    register_chunk_task(runtime)
    watchdog.start()
    heartbeat.start()
    return runtime


def register_chunk_task(runtime: WorkerRuntime) -> None:
    @runtime.app.task(name=RUN_CHUNK_TASK, ignore_result=True, acks_late=True,
                      reject_on_worker_lost=True)
    def run_chunk(batch_id: Any, job_ids: Any) -> None:
        if not isinstance(batch_id, str) or not isinstance(job_ids, list) or not all(
            isinstance(job_id, int) and not isinstance(job_id, bool) for job_id in job_ids
        ):
            log.error("Dropping an invalid chunk message: batch_id=%r job_ids=%.200r",
                      batch_id, job_ids)
            return
        runtime.consumer.process(batch_id, job_ids)

    def on_received(request: Any = None, **_: Any) -> None:
        if request is None or request.name != RUN_CHUNK_TASK:
            return
        args = request.args if isinstance(request.args, list | tuple) else ()
        if len(args) != 2 or not isinstance(args[1], list):
            return
        try:
            with runtime.store.write() as session:
                reserve_jobs(session, args[1], runtime.node_name, runtime.settings.lease_s)
        except Exception as error:
            # Without the reservation the jobs are still safe, only slower to recover.
            log.warning("Batch %s: reserving a received chunk failed: %s", args[0], error)

    task_received.connect(on_received, weak=False)


def banner(runtime: WorkerRuntime) -> str:
    kinds = runtime.kinds
    lines = [
        f"llmjobs worker {runtime.node_name}",
        f"  pid:         {os.getpid()}",
        f"  device:      {runtime.device} "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r})",
        f"  kinds:       {', '.join(kinds)}",
        f"  queues:      {', '.join(queue_name(kind) for kind in kinds)}",
        f"  broker:      {redact_url(runtime.broker_url)}",
        f"  database:    {redact_url(runtime.settings.database_url)}",
        f"  lease:       {runtime.settings.lease_s} s, reaper every {runtime.settings.reaper_interval_s} s",
        f"  limits:      micro-batch <= {runtime.settings.max_batch_size} rows and "
        f"{runtime.settings.max_batch_tokens} padded tokens, generation timeout "
        f"{runtime.settings.generation_timeout_s:.0f} s",
    ]
    for name, kind in kinds.items():
        lines.append(f"  checkpoint:  {name} = {kind.checkpoint_id} ({kind.checkpoint_revision})")
    return "\n".join(lines)


def run_worker(
    settings: Settings, broker_url: str, kind_names: Sequence[str], device: str,
    gpu_index: int | None, loglevel: str = "INFO",
) -> int:
    """Run a worker until SIGTERM or SIGINT stops it; return the process exit status."""
    if not kind_names:
        raise WorkerError("no kinds to serve; pass --kinds moderate,translate,write")
    runtime = build_runtime(settings, broker_url, kind_names, device, gpu_index)
    log.info("%s", banner(runtime))
    runtime.reaper.start()
    argv = [
        "worker",
        "--pool", "solo",
        "--hostname", runtime.node_name,
        "--queues", ",".join(queue_name(kind) for kind in kind_names),
        "--loglevel", loglevel,
        # Workers coordinate through the store; gossip and mingle only slow the start.
        "--without-gossip", "--without-mingle",
    ]
    try:
        runtime.app.worker_main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        runtime.reaper.stop()
        runtime.store.dispose()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of one worker process, started by the launcher with its environment set."""
    import json

    options = json.loads((argv or sys.argv[1:])[0])
    from llmjobs.worker.logs import configure_worker_logging

    configure_worker_logging(options["loglevel"])
    if options.get("launcher_pid"):
        from llmjobs.worker.launcher import exit_with_launcher

        exit_with_launcher(int(options["launcher_pid"]))
    settings = Settings.load(config_file=options.get("config_file"))
    sys.exit(run_worker(settings, options["broker_url"], options["kinds"], options["device"],
                        options.get("gpu_index"), options["loglevel"]))


if __name__ == "__main__":
    main()
