"""Kind name -> JobKind class, and ``create_kind`` that loads a kind's checkpoint."""

from __future__ import annotations

import logging

from llmjobs.config import Settings
from llmjobs.worker.kinds import moderate, translate, write
from llmjobs.worker.kinds.base import KINDS, JobKind

log = logging.getLogger(__name__)

# Importing the kind modules registers them in KINDS through @register_kind.
BUILTIN_MODULES = (moderate, translate, write)

__all__ = ["KINDS", "create_kind", "resolve_checkpoint"]


def resolve_checkpoint(name: str, settings: Settings) -> tuple[str, bool]:
    """Return (checkpoint source, whether it is the tiny fallback) for a kind, without loading it."""
    configured = settings.checkpoints.get(name)
    if configured:
        return configured, False
    from llmjobs.checkpoints.tiny import DEFAULT_FOR_KIND

    return str(settings.home / "checkpoints" / "tiny" / DEFAULT_FOR_KIND[name]), True


def create_kind(name: str, settings: Settings, device: str | None = None) -> JobKind:
    """Load the checkpoint configured for a kind (or the tiny one) and return the kind over it.

    device overrides settings.device; the worker launcher pins each process to one GPU.
    """
    from llmjobs.worker.engine import load_checkpoint, select_device

    if name not in KINDS:
        raise KeyError(f"unknown kind {name!r}; expected one of {', '.join(sorted(KINDS))}")
    source, tiny = resolve_checkpoint(name, settings)
    if tiny:
        from llmjobs.checkpoints.tiny import ensure_tiny_checkpoints

        source = str(ensure_tiny_checkpoints(settings.home)[name])
        log.warning(
            "No checkpoint is configured for kind %r, so it uses the tiny random checkpoint %s: "
            "its output is meaningless. Set LLMJOBS_CHECKPOINT_%s or [checkpoints] %s in "
            "config.toml to a Hugging Face id or a local folder.",
            name, source, name.upper(), name,
        )
    checkpoint = load_checkpoint(source, name, settings, select_device(device or settings.device))
    return KINDS[name](checkpoint, settings)
