"""The private redis-server shared by several llmjobs processes of one LLMJOBS_HOME."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from llmjobs.embedded import EmbeddedRedis, embedded_redis
from tests.servers import find_redis_server

pytestmark = pytest.mark.skipif(find_redis_server() is None, reason="redis-server not found")

_SECOND_USER = """
import sys
from pathlib import Path
from llmjobs.embedded import embedded_redis
with embedded_redis(Path(sys.argv[1])):
    print("ready", flush=True)
    sys.stdin.read()
"""


def _ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


@pytest.fixture()
def short_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Unix socket paths are limited to about 107 bytes.
    return Path(tmp_path_factory.mktemp("emb", numbered=True))


def test_last_user_stops_server(short_home: Path) -> None:
    server = EmbeddedRedis(short_home)
    server.acquire()
    second = subprocess.Popen([sys.executable, "-c", _SECOND_USER, str(short_home)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert second.stdout is not None
        assert second.stdout.readline().strip() == "ready"
        server.release()
        assert _ping(server.url)
    finally:
        second.communicate("", timeout=60)
    assert second.returncode == 0
    assert not _ping(server.url)


def test_killed_user_does_not_hold_server(short_home: Path) -> None:
    server = EmbeddedRedis(short_home)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    server.users.mkdir(parents=True, exist_ok=True)
    (server.users / str(dead.pid)).touch()
    with embedded_redis(short_home) as url:
        assert _ping(url)
    assert not _ping(server.url)


def test_dead_server_restarted(short_home: Path) -> None:
    server = EmbeddedRedis(short_home)
    server.acquire()
    try:
        redis.Redis(unix_socket_path=str(server.path)).shutdown(nosave=True)
        assert server.ensure_running()
        assert _ping(server.url)
        assert not server.ensure_running()
    finally:
        server.release()
