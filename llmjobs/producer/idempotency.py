"""Idempotency keys: the same input with the same parameters maps to the same batch."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from llmjobs.errors import ProducerError

# The batches.idempotency_key column is VARCHAR(200).
MAX_KEY_CHARS = 200


def default_key(
    source_sha256: str, kind: str, params: dict[str, Any], reading: dict[str, Any]
) -> str:
    """Return the sha256 of the input bytes' sha256, the kind and canonical JSON of the parameters.

    The reading options (format, encoding, columns, --skip-invalid) are included because
    they change which jobs the same bytes become.
    """
    material = json.dumps(
        {"source_sha256": source_sha256, "kind": kind, "params": params, "reading": reading},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def check_key(key: str) -> str:
    """Return a user-given key, or raise ProducerError when it cannot be stored."""
    if not key.strip():
        raise ProducerError("--idempotency-key is empty; give a non-empty key or leave it out")
    if len(key) > MAX_KEY_CHARS:
        raise ProducerError(
            f"--idempotency-key has {len(key)} characters, over the maximum of {MAX_KEY_CHARS}"
        )
    return key
