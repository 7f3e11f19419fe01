"""One typed settings object, built from LLMJOBS_* environment variables and an optional TOML file.

Nothing here runs at import time: call ``Settings.load()`` once at start and pass the
result to whatever needs it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from llmjobs.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

KINDS = ("moderate", "translate", "write")

_BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "unix")
_DATABASE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")


@dataclass(frozen=True)
class Settings:
    """Validated settings for every llmjobs command, worker and the Python API."""

    home: Path
    database_url: str
    # None means "start a private redis-server on a Unix socket in home".
    broker_url: str | None = None
    config_file: Path | None = None
    # Kind name to a Hugging Face id or a local directory; a missing kind uses tiny checkpoints.
    checkpoints: Mapping[str, str] = field(default_factory=dict)
    # Extra write templates (TOML); the built-in ones are always available.
    templates_file: Path | None = None
    chunk_size: int = 64
    max_text_chars: int = 32_000
    max_items_per_file: int = 10_000_000
    max_batch_size: int = 32
    # Padding-aware budget: rows x longest row in a micro-batch, in tokens.
    max_batch_tokens: int = 16_384
    max_input_tokens: int = 2048
    max_new_tokens: int = 64
    # translate: a cap on each piece's translation; 0 sizes it from the piece (see README).
    translate_max_new_tokens: int = 0
    device: str = "auto"
    # Intra-op threads of torch in each worker process; 0 keeps torch's default (one per
    # core). Set it when several CPU workers share a host, or they slow each other down.
    torch_threads: int = 0
    dtype: str = "auto"
    lease_s: int = 120
    reaper_interval_s: int = 15
    max_attempts: int = 3
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    generation_timeout_s: float = 300.0
    # How long past generation_timeout_s the watchdog waits before it restarts the process.
    watchdog_grace_s: float = 30.0
    task_time_limit_s: int = 1800
    visibility_timeout_s: int = 3600
    prefetch_multiplier: int = 2
    log_level: str = "INFO"

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        config_file: Path | str | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings from defaults, then the TOML file, then the environment, then overrides."""
        env = os.environ if environ is None else environ
        home = Path(env.get("LLMJOBS_HOME") or Path.home() / ".llmjobs").expanduser()

        values: dict[str, Any] = {}
        path_text = config_file or env.get("LLMJOBS_CONFIG")
        path = Path(path_text).expanduser() if path_text else None
        if path is None and (home / "config.toml").is_file():
            path = home / "config.toml"
        if path is not None:
            values.update(_read_toml(path))
            values["config_file"] = path

        from_environment = _read_environment(env)
        checkpoints = {**values.get("checkpoints", {}), **from_environment.pop("checkpoints", {})}
        values.update(from_environment)
        if checkpoints:
            values["checkpoints"] = checkpoints
        values.update({key: value for key, value in overrides.items() if value is not None})
        values["home"] = Path(values.pop("home", home)).expanduser()
        values.setdefault("database_url", f"sqlite:///{values['home'] / 'llmjobs.db'}")
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        """Return a validated copy with some fields changed."""
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid setting."""
        _check_url("LLMJOBS_DATABASE_URL", self.database_url, _DATABASE_SCHEMES)
        if self.broker_url is not None:
            _check_url("LLMJOBS_BROKER_URL", self.broker_url, _BROKER_SCHEMES)
        for kind in self.checkpoints:
            if kind not in KINDS:
                raise ConfigError(
                    f"checkpoint configured for unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
                )
        positive = (
            "chunk_size", "max_text_chars", "max_items_per_file", "max_batch_size",
            "max_batch_tokens", "max_input_tokens", "max_new_tokens", "lease_s",
            "reaper_interval_s", "max_attempts", "task_time_limit_s", "visibility_timeout_s",
            "prefetch_multiplier",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"setting {name} must be a positive integer, got {value!r}")
        for name in ("torch_threads", "translate_max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"setting {name} must be 0 or more, got {value!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(
                f"setting dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}"
            )
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"setting device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        check_time_limits(self)

    @property
    def sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def check_time_limits(settings: Settings) -> None:
    """Raise ConfigError unless lease < generation timeout bound < task limit < visibility timeout.

    A task limit at or above Redis's visibility timeout would let Redis hand the same chunk
    to a second worker while the first is still running it.
    """
    if settings.task_time_limit_s >= settings.visibility_timeout_s:
        raise ConfigError(
            f"task_time_limit_s ({settings.task_time_limit_s}) must be below "
            f"visibility_timeout_s ({settings.visibility_timeout_s}); lower the task limit "
            "or raise the broker's visibility timeout"
        )
    if settings.generation_timeout_s >= settings.task_time_limit_s:
        raise ConfigError(
            f"generation_timeout_s ({settings.generation_timeout_s}) must be below "
            f"task_time_limit_s ({settings.task_time_limit_s})"
        )
    if settings.lease_s * 2 >= settings.visibility_timeout_s:
        raise ConfigError(
            f"lease_s ({settings.lease_s}) must be less than half of visibility_timeout_s "
            f"({settings.visibility_timeout_s}) so the reaper requeues lost jobs first"
        )


def redact_url(url: str | None) -> str:
    """Return the URL with any password replaced by '***', safe for output and logs."""
    if not url:
        return str(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def kombu_broker_url(url: str) -> str:
    """Spell a Unix-socket URL the way kombu expects (redis+socket://)."""
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://"):]
    return url


def redis_client_url(url: str) -> str:
    """Spell a Unix-socket URL the way redis-py expects (unix://)."""
    if url.startswith("redis+socket://"):
        return "unix://" + url[len("redis+socket://"):]
    return url


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in schemes:
        raise ConfigError(
            f"{name} {redact_url(url)!r} is invalid: expected a URL starting with "
            + " or ".join(f"{s}://" for s in schemes)
        )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found; fix LLMJOBS_CONFIG or --config") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None

    names = {f.name for f in dataclasses.fields(Settings)} - {"config_file"}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "checkpoints":
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [checkpoints] must be a table of kind = checkpoint")
            values["checkpoints"] = {str(k): str(v) for k, v in value.items()}
        elif key in names:
            values[key] = value
        else:
            raise ConfigError(f"{path}: unknown setting {key!r}; known settings: {', '.join(sorted(names))}")
    return values


def _read_environment(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if env.get("LLMJOBS_HOME"):
        values["home"] = env["LLMJOBS_HOME"]
    if env.get("LLMJOBS_DATABASE_URL"):
        values["database_url"] = env["LLMJOBS_DATABASE_URL"]
    if env.get("LLMJOBS_BROKER_URL"):
        values["broker_url"] = env["LLMJOBS_BROKER_URL"]

    checkpoints = {}
    for kind in KINDS:
        value = env.get(f"LLMJOBS_CHECKPOINT_{kind.upper()}")
        if value:
            checkpoints[kind] = value
    if checkpoints:
        values["checkpoints"] = checkpoints

    numeric = {f.name: str(f.type) for f in dataclasses.fields(Settings)}
    for name, type_name in numeric.items():
        raw = env.get(f"LLMJOBS_{name.upper()}")
        if raw is None or name in ("home", "database_url", "broker_url", "checkpoints", "config_file"):
            continue
        if name == "templates_file":
            values[name] = Path(raw).expanduser()
            continue
        values[name] = _parse_scalar(name, raw, type_name)
    return values


def _parse_scalar(name: str, raw: str, type_name: str) -> Any:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"LLMJOBS_{name.upper()}={raw!r} is invalid: expected a {type_name}") from None
    return raw
