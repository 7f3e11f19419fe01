"""Prompt encoding for causal LMs: the checkpoint's chat template when it has one."""

from __future__ import annotations

from typing import Any


def encode_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Return the prompt ids for chat messages, ending where the assistant's answer starts.

    Without a chat template, a single user message is used as it is, and a conversation
    becomes "role: content" lines followed by "assistant:".
    """
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template writes any BOS token itself, so the tokenizer must not add another.
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(messages) == 1 and messages[0]["role"] == "user":
        text = messages[0]["content"]
    else:
        text = "\n".join([*(f"{m['role']}: {m['content']}" for m in messages), "assistant:"])
    return list(tokenizer(text)["input_ids"])
