"""docker-compose.yml: its structure, and validation by `docker compose config`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers import require_servers

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SECRETS = {
    "REDIS_PASSWORD": "redis-secret",
    "POSTGRES_PASSWORD": "postgres-secret",
    "FLOWER_BASIC_AUTH": "admin:flower-secret",
}


def compose_command() -> list[str] | None:
    """Return Compose v2 (`docker compose`) or v1 (`docker-compose`), whichever runs."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return command
    return None


def run_config(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        if require_servers():
            pytest.fail("neither `docker compose` nor `docker-compose` runs "
                        "(LLMJOBS_REQUIRE_SERVERS=1 forbids skipping)")
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {name: value for name, value in os.environ.items()
           if name not in SECRETS and not name.startswith(("COMPOSE_", "LLMJOBS_"))}
    env.update(environment)
    return subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = run_config(SECRETS)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)
    return parsed


def test_compose_config_services(config: dict[str, Any]) -> None:
    assert set(config["services"]) == {
        "redis", "postgres", "migrate", "worker-gpu0", "worker-gpu1", "scheduler", "flower",
    }


@pytest.mark.parametrize(("service", "device"), [("worker-gpu0", "0"), ("worker-gpu1", "1")])
def test_compose_worker_pinned_to_gpu(config: dict[str, Any], service: str, device: str) -> None:
    worker = config["services"][service]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]

    assert devices[0]["device_ids"] == [device]
    assert devices[0]["capabilities"] == ["gpu"]
    assert worker["command"] == ["llmjobs", "worker", "--gpus", "0"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_urls_use_secrets(config: dict[str, Any]) -> None:
    environment = config["services"]["worker-gpu0"]["environment"]

    assert environment["LLMJOBS_BROKER_URL"] == "redis://:redis-secret@redis:6379/0"
    assert environment["LLMJOBS_DATABASE_URL"] == (
        "postgresql+psycopg://llmjobs:postgres-secret@postgres:5432/llmjobs"
    )
    assert environment["HF_HUB_OFFLINE"] == "1"
    assert environment["HF_HOME"] == "/models/hf"
    assert config["services"]["flower"]["environment"]["CELERY_BROKER_URL"] == (
        "redis://:redis-secret@redis:6379/0"
    )


def test_compose_migrate_runs_upgrade(config: dict[str, Any]) -> None:
    migrate = config["services"]["migrate"]

    assert migrate["command"] == ["llmjobs", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"


def test_compose_stores_persist(config: dict[str, Any]) -> None:
    redis_service = config["services"]["redis"]

    assert "--appendonly yes" in " ".join(redis_service["command"])
    assert "healthcheck" in redis_service
    assert "healthcheck" in config["services"]["postgres"]
    assert set(config["volumes"]) == {"redis-data", "postgres-data"}


def test_compose_requires_passwords() -> None:
    result = run_config({"FLOWER_BASIC_AUTH": "admin:x"})

    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr or "POSTGRES_PASSWORD" in result.stderr


def test_dockerfile_installs_postgres_extra() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()

    assert 'pip install ".[postgres]"' in dockerfile
    assert "TORCH_INDEX_URL" in dockerfile
