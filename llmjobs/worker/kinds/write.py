"""Writing with a causal LM: a named template, a raw prompt, or chat messages, per row.

Params (at most one of template, prompt, messages):
- "template": "headline" or "headline@1", with "variables" and optional "language"; the row
  text fills the template's "text" field.
- "prompt": an instruction; "{text}" in it is replaced by the row text, else the row text is
  appended after a blank line.
- "messages": a chat prefix of {"role", "content"} objects; the row text is added as the last
  user message.
- none of them: the row text is the prompt.
Sampling comes from params "generation" ({temperature, top_p, seed, max_new_tokens}) or the
same keys at the top level; the options, with the seed used, are stored in the output.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmjobs.errors import LlmjobsError
from llmjobs.worker.kinds.base import ItemResult, JobKind, WorkItem, failed, register_kind
from llmjobs.worker.kinds.decoding import decode_tokens
from llmjobs.worker.kinds.generation import Generation, GenerationOptions, generate, parse_generation
from llmjobs.worker.kinds.prompts import encode_prompt

_SAMPLING_KEYS = ("temperature", "top_p", "seed", "max_new_tokens")
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Request:
    """One row's prompt ids, the template it came from, and its generation options."""

    prompt_ids: list[int]
    template: str | None
    options: GenerationOptions


@register_kind
class WriteKind(JobKind):
    """Generates text from templates, prompts or chat messages."""

    name = "write"

    def request(self, item: WorkItem) -> Request:
        """Build the row's prompt and options; raise ValueError for invalid params."""
        messages, template = self.messages(item)
        options = parse_generation(_generation_params(item.params), self.settings.max_new_tokens)
        return Request(encode_prompt(self.checkpoint.tokenizer, messages), template, options)

    def messages(self, item: WorkItem) -> tuple[list[dict[str, str]], str | None]:
        """Return the chat messages for the row and "name@version" of its template, if any."""
        params = item.params
        sources = [key for key in ("template", "prompt", "messages") if params.get(key)]
        if len(sources) > 1:
            raise ValueError(f"set only one of template, prompt and messages; got {', '.join(sources)}")
        if params.get("template"):
            text, template = self._render_template(item)
            return [{"role": "user", "content": text}], template
        if params.get("prompt"):
            prompt = params["prompt"]
            if not isinstance(prompt, str):
                raise ValueError(f"prompt must be a string, got {prompt!r}")
            if "{text}" in prompt:
                content = prompt.replace("{text}", item.text)
            else:
                content = f"{prompt}\n\n{item.text}"
            return [{"role": "user", "content": content}], None
        if params.get("messages"):
            return [*_parse_messages(params["messages"]), {"role": "user", "content": item.text}], None
        return [{"role": "user", "content": item.text}], None

    def group_key(self, item: WorkItem) -> Hashable:
        try:
            options = parse_generation(_generation_params(item.params), self.settings.max_new_tokens)
        except ValueError:
            return ("invalid",)
        return ("sample",) if options.sampling else ("greedy", options.max_new_tokens)

    def token_count(self, item: WorkItem) -> int:
        try:
            messages, _ = self.messages(item)
        except (ValueError, KeyError, LlmjobsError):
            return len(self.checkpoint.tokenizer(item.text)["input_ids"])
        return len(encode_prompt(self.checkpoint.tokenizer, messages))

    def check(self, item: WorkItem) -> ItemResult | None:
        try:
            request = self.request(item)
        except (ValueError, KeyError, LlmjobsError) as error:
            return failed(item, "invalid_input", str(error))
        length = len(request.prompt_ids)
        if length > self.max_input_tokens:
            return failed(
                item, "input_too_long",
                f"prompt has {length} tokens, more than the limit of {self.max_input_tokens}; "
                "shorten the text or raise max_input_tokens (up to the checkpoint's "
                f"{self.checkpoint.max_input_tokens})",
                input_tokens=length,
            )
        return None

    def preprocess(self, items: Sequence[WorkItem]) -> list[Request]:
        requests = []
        for item in items:
            request = self.request(item)
            requests.append(Request(request.prompt_ids, request.template, request.options.with_seed()))
        return requests

    def forward(self, prepared: list[Request], deadline: float | None) -> list[Generation]:
        return generate(
            self.checkpoint,
            [request.prompt_ids for request in prepared],
            [request.options for request in prepared],
            deadline,
        )

    def postprocess(
        self, items: Sequence[WorkItem], prepared: list[Request], raw: list[Generation]
    ) -> list[ItemResult]:
        results = []
        for item, request, generation in zip(items, prepared, raw, strict=True):
            output = {
                "text": decode_tokens(self.checkpoint.tokenizer, generation.token_ids),
                "finish_reason": generation.finish_reason,
                "template": request.template,
                "generation": request.options.to_output(),
            }
            results.append(ItemResult(
                job_id=item.job_id, status="succeeded", output=output,
                input_tokens=len(request.prompt_ids), output_tokens=generation.output_tokens,
            ))
        return results

    def _render_template(self, item: WorkItem) -> tuple[str, str]:
        from llmjobs.templates import get_template

        reference = item.params["template"]
        if not isinstance(reference, str):
            raise ValueError(f"template must be a name such as 'headline' or 'headline@1', got {reference!r}")
        # Rows may name the language; the batch stores --template-lang as template_language.
        language = item.params.get("language") or item.params.get("template_language")
        # get_template resolves "name@version", and a bare name to its latest version.
        template = get_template(reference, language=language, templates_file=self.settings.templates_file)
        variables = item.params.get("variables") or {}
        if not isinstance(variables, Mapping):
            raise ValueError(f"variables must be an object of field -> text, got {variables!r}")
        values = {str(key): str(value) for key, value in variables.items()}
        values["text"] = item.text
        return template.render(values), f"{template.name}@{template.version}"


def _generation_params(params: Mapping[str, Any]) -> dict[str, Any]:
    # Sampling fields may come at the top level of a row or inside "generation"; the latter wins.
    top_level = {key: params[key] for key in _SAMPLING_KEYS if params.get(key) is not None}
    # The producer stores --max-tokens and the OpenAI batch field under their own name.
    if params.get("max_tokens") is not None and "max_new_tokens" not in top_level:
        top_level["max_new_tokens"] = params["max_tokens"]
    nested = params.get("generation")
    if nested is not None and not isinstance(nested, Mapping):
        raise ValueError(f"generation must be an object, got {nested!r}")
    return {"generation": {**top_level, **(nested or {})}}


def _parse_messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list):
        raise ValueError(f"messages must be a list of {{role, content}} objects, got {raw!r}")
    messages = []
    for index, message in enumerate(raw):
        if not isinstance(message, Mapping) or message.get("role") not in _ROLES or not isinstance(
            message.get("content"), str
        ):
            raise ValueError(
                f"messages[{index}] must be {{\"role\": system|user|assistant, "
                f"\"content\": text}}, got {message!r}"
            )
        messages.append({"role": str(message["role"]), "content": str(message["content"])})
    return messages
