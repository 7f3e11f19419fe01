"""Per-kind row rules: which fields a row of each kind needs, and its per-row parameters.

Each rule class turns a row's fields into (input text, per-row parameters) or raises
RowError. Batch-level parameters live in the BatchPlan. A row stores only the parameters
it sets itself, so a million rows with one target language store that language once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from llmjobs.errors import ProducerError
from llmjobs.languages import normalise_language
from llmjobs.producer.plan import SAMPLING_FIELDS, BatchPlan, sampling_error
from llmjobs.templates import Template, get_template

CHAT_ROLES = ("system", "user", "assistant")


class RowError(Exception):
    """Raised by a rule when one field of a row is invalid."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def check_string(value: Any, field: str, max_chars: int) -> str:
    """Return the value when it is a string that the store accepts, else raise RowError."""
    if not isinstance(value, str):
        raise RowError(field, f"must be a string, got {_json_type(value)}")
    if len(value) > max_chars:
        raise RowError(
            field,
            f"has {len(value)} characters, over the maximum of {max_chars} (max_text_chars); "
            "split the item or raise the setting",
        )
    # PostgreSQL text cannot hold NUL, and no store can hold an unpaired surrogate.
    if "\x00" in value:
        raise RowError(field, "contains a NUL character (\\u0000), which cannot be stored")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise RowError(
                field, f"contains an unpaired surrogate at character {error.start}"
            ) from None
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class KindRules(ABC):
    """The row rules of one kind."""

    kind: ClassVar[str]

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan
        self.max_chars = plan.max_text_chars

    @abstractmethod
    def check(self, fields: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Return (input text, per-row parameters or None), or raise RowError."""

    def required_text(self, fields: dict[str, Any]) -> str:
        if "text" not in fields:
            raise RowError("text", "missing; add a \"text\" field with the item's text")
        return check_string(fields["text"], "text", self.max_chars)


class ModerateRules(KindRules):
    kind = "moderate"

    def check(self, fields: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        return self.required_text(fields), None


class TranslateRules(KindRules):
    kind = "translate"

    def __init__(self, plan: BatchPlan) -> None:
        super().__init__(plan)
        # Rows repeat a handful of codes; normalising each once keeps validation fast.
        self._codes: dict[str, str] = {}

    def check(self, fields: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        text = self.required_text(fields)
        params: dict[str, Any] = {}
        target = self._language(fields, "target_lang")
        source = self._language(fields, "source_lang")
        if target is not None:
            params["target_lang"] = target
        if source is not None:
            params["source_lang"] = source
        target = target or self.plan.params.get("target_lang")
        source = source or self.plan.params.get("source_lang")
        if target is None:
            raise RowError("target_lang", "missing; pass --target-lang or add target_lang to the row")
        if target == source:
            raise RowError("target_lang", f"is the same as the source language {source!r}")
        return text, params or None

    def _language(self, fields: dict[str, Any], name: str) -> str | None:
        value = fields.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise RowError(name, f"must be a language code string, got {_json_type(value)}")
        code = self._codes.get(value)
        if code is None:
            try:
                code = normalise_language(value)
            except ValueError as error:
                raise RowError(name, str(error)) from None
            self._codes[value] = code
        return code


class WriteRules(KindRules):
    """A write row is chat messages, a prompt, or a template with its variables."""

    kind = "write"

    def __init__(self, plan: BatchPlan) -> None:
        super().__init__(plan)
        self._templates: dict[str, Template] = {}

    def check(self, fields: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        text = fields.get("text")
        if text is not None:
            text = check_string(text, "text", self.max_chars)
        params: dict[str, Any] = {}
        for name in SAMPLING_FIELDS:
            if fields.get(name) is not None:
                error = sampling_error(name, fields[name])
                if error:
                    raise RowError(name, f"{error}, got {fields[name]!r}")
                params[name] = fields[name]

        messages = fields.get("messages")
        prompt = fields.get("prompt")
        if messages is not None and prompt is not None:
            raise RowError("prompt", "give either prompt or messages, not both")
        if messages is not None:
            params["messages"] = self._messages(messages)
            return (text if text is not None else _last_user_content(params["messages"])), params
        if prompt is not None:
            params["prompt"] = check_string(prompt, "prompt", self.max_chars)
            return (text if text is not None else params["prompt"]), params
        return self._templated(fields, text, params)

    def _templated(
        self, fields: dict[str, Any], text: str | None, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        template = self.plan.template
        if fields.get("template") is not None:
            template = self._template(fields["template"])
            params["template"] = template.ref
        if template is None:
            raise RowError(
                None,
                "nothing to write from: pass --template, or give the row a template, "
                "prompt or messages",
            )
        variables = self._variables(fields.get("variables"))
        values = dict(variables)
        if text is not None:
            values["text"] = text
        elif "text" in template.required_fields:
            raise RowError("text", f"missing; template {template.ref!r} uses {{text}}")
        for name in template.required_fields:
            if name not in values:
                raise RowError(
                    "variables",
                    f"{name!r} is missing; template {template.ref!r} needs "
                    f"{', '.join(template.required_fields)}",
                )
        used = {name: variables[name] for name in template.fields if name in variables}
        if used:
            params["variables"] = used
        if text is None:
            # The rendered prompt is the input a person reads; the worker renders it again.
            text = template.render(values)
        return text, params or None

    def _template(self, reference: Any) -> Template:
        if not isinstance(reference, str):
            raise RowError("template", f"must be a template name, got {_json_type(reference)}")
        template = self._templates.get(reference)
        if template is None:
            try:
                template = get_template(
                    reference, self.plan.template_language, self.plan.templates_file
                )
            except ProducerError as error:
                raise RowError("template", str(error)) from None
            self._templates[reference] = template
        return template

    def _variables(self, value: Any) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise RowError("variables", f"must be an object of strings, got {_json_type(value)}")
        total = 0
        for key, item in value.items():
            check_string(item, f"variables.{key}", self.max_chars)
            total += len(item)
        if total > self.max_chars:
            raise RowError(
                "variables", f"hold {total} characters in all, over the maximum of {self.max_chars}"
            )
        return value

    def _messages(self, value: Any) -> list[dict[str, str]]:
        if not isinstance(value, list) or not value:
            raise RowError("messages", "must be a non-empty array of {role, content} objects")
        messages: list[dict[str, str]] = []
        total = 0
        for index, message in enumerate(value):
            where = f"messages[{index}]"
            if not isinstance(message, dict):
                raise RowError(where, f"must be an object, got {_json_type(message)}")
            role = message.get("role")
            if role not in CHAT_ROLES:
                raise RowError(f"{where}.role", f"must be one of {', '.join(CHAT_ROLES)}, got {role!r}")
            content = _content_text(message.get("content"), where)
            check_string(content, f"{where}.content", self.max_chars)
            total += len(content)
            messages.append({"role": role, "content": content})
        if total > self.max_chars:
            raise RowError(
                "messages", f"hold {total} characters in all, over the maximum of {self.max_chars}"
            )
        return messages


def _content_text(content: Any, where: str) -> str:
    """Accept a string, or an array of {"type": "text", "text": ...} parts joined together."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                part.get("text"), str
            ):
                raise RowError(
                    f"{where}.content", "only text parts ({\"type\": \"text\", \"text\": ...}) are supported"
                )
            parts.append(part["text"])
        return "".join(parts)
    raise RowError(
        f"{where}.content",
        f"must be a string or an array of text parts, got {_json_type(content)}",
    )


def _last_user_content(messages: list[dict[str, str]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"]
    return messages[-1]["content"]


RULES: dict[str, type[KindRules]] = {
    rules.kind: rules for rules in (ModerateRules, TranslateRules, WriteRules)
}


def rules_for(plan: BatchPlan) -> KindRules:
    return RULES[plan.kind](plan)
