"""OpenAI Batch API request files: JSON Lines of chat-completion requests, for write jobs.

Each line holds `custom_id` (the item id), optionally `method` and `url`, and a `body`
with `messages` and optional `max_tokens` (or `max_completion_tokens`), `temperature`,
`top_p` and `seed`. The body's `model` is ignored, because the checkpoint comes from the
llmjobs configuration; other body keys are ignored too.
"""

from __future__ import annotations

from typing import Any

from llmjobs.producer.jsonl import JsonlReader
from llmjobs.producer.records import Record, Rejection

CHAT_COMPLETIONS_URL = "/v1/chat/completions"
_SAMPLING_KEYS = ("temperature", "top_p", "seed")


class OpenAIBatchReader(JsonlReader):
    """Reads OpenAI batch request lines into write rows (id, messages, sampling fields)."""

    format = "openai"

    def convert(self, line: int, number: int, value: Any) -> Record:
        if not isinstance(value, dict):
            return Record(line, number, value)
        custom_id = value.get("custom_id")
        url = value.get("url", CHAT_COMPLETIONS_URL)
        if url != CHAT_COMPLETIONS_URL:
            return _problem(
                line, number, "url",
                f"{url!r} is not supported; only {CHAT_COMPLETIONS_URL} requests can be submitted",
                custom_id,
            )
        method = value.get("method", "POST")
        if method != "POST":
            return _problem(line, number, "method", f"must be POST, got {method!r}", custom_id)
        if custom_id is None:
            return _problem(
                line, number, "custom_id", "missing; every batch request needs a custom_id", None
            )
        body = value.get("body")
        if not isinstance(body, dict):
            return _problem(line, number, "body", "missing or not an object", custom_id)

        fields: dict[str, Any] = {"id": custom_id, "messages": body.get("messages")}
        if "max_completion_tokens" in body and "max_tokens" in body:
            return _problem(
                line, number, "body.max_tokens",
                "give max_tokens or max_completion_tokens, not both", custom_id,
            )
        if "max_completion_tokens" in body:
            fields["max_tokens"] = body["max_completion_tokens"]
        elif "max_tokens" in body:
            fields["max_tokens"] = body["max_tokens"]
        for key in _SAMPLING_KEYS:
            if key in body:
                fields[key] = body[key]
        if body.get("n", 1) != 1:
            return _problem(line, number, "body.n", "only n = 1 is supported", custom_id)
        return Record(line, number, fields)


def _problem(line: int, number: int, field: str, reason: str, custom_id: Any) -> Record:
    item_id = custom_id if isinstance(custom_id, str) else None
    return Record(line, number, None, Rejection(line, field, reason, item_id))
