"""Batch-level parameters: checked once, before any row is read, and stored with the batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmjobs.config import KINDS, Settings
from llmjobs.errors import ProducerError
from llmjobs.languages import normalise_language
from llmjobs.models.base import Priority
from llmjobs.producer.options import SubmitOptions
from llmjobs.templates import DEFAULT_LANGUAGE, Template, get_template
from llmjobs.worker.taxonomy import parse_thresholds

# The sampling fields of write jobs, as batch options and as row fields.
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "seed")
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class BatchPlan:
    """A submission's kind, batch parameters and queueing choices."""

    kind: str
    params: dict[str, Any]
    priority: Priority
    chunk_size: int
    checkpoint: str | None
    template: Template | None
    template_language: str
    max_text_chars: int
    templates_file: Path | None


def plan_batch(settings: Settings, kind: str, options: SubmitOptions) -> BatchPlan:
    """Check the options of a kind and build the batch parameters; raise ProducerError."""
    if kind not in KINDS:
        raise ProducerError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    _reject_foreign_options(kind, options)

    params: dict[str, Any] = {}
    template: Template | None = None
    template_language = _language(options.template_language, "--template-lang") or DEFAULT_LANGUAGE
    if kind == "translate":
        target = _language(options.target_lang, "--target-lang")
        source = _language(options.source_lang, "--source-lang")
        if target is not None:
            params["target_lang"] = target
        if source is not None:
            params["source_lang"] = source
        if target is not None and target == source:
            raise ProducerError(
                f"--source-lang and --target-lang are both {target!r}; give two different languages"
            )
    elif kind == "moderate" and options.thresholds:
        try:
            parse_thresholds(options.thresholds)
        except ValueError as error:
            raise ProducerError(f"--threshold: {error}") from None
        params["thresholds"] = options.thresholds
    elif kind == "write":
        if options.template is not None:
            template = get_template(options.template, template_language, settings.templates_file)
            params["template"] = template.ref
        params["template_language"] = template_language
        for name in SAMPLING_FIELDS:
            value = getattr(options, name)
            if value is not None:
                problem = sampling_error(name, value)
                if problem:
                    raise ProducerError(f"--{name.replace('_', '-')} {value!r} is invalid: {problem}")
                params[name] = value

    try:
        priority = Priority(options.priority)
    except ValueError:
        raise ProducerError(
            f"priority {options.priority!r} is invalid; expected high, normal or low"
        ) from None
    chunk_size = options.chunk_size if options.chunk_size is not None else settings.chunk_size
    if chunk_size < 1:
        raise ProducerError(f"--chunk-size {chunk_size} is invalid; it must be at least 1")

    return BatchPlan(
        kind=kind,
        params=params,
        priority=priority,
        chunk_size=chunk_size,
        checkpoint=settings.checkpoints.get(kind),
        template=template,
        template_language=template_language,
        max_text_chars=settings.max_text_chars,
        templates_file=settings.templates_file,
    )


def sampling_error(name: str, value: Any) -> str | None:
    """Return why a sampling value is invalid, or None when it is valid."""
    if isinstance(value, bool):
        return "expected a number"
    if name == "max_tokens":
        if not isinstance(value, int) or value < 1:
            return "expected a positive integer"
    elif name == "seed":
        if not isinstance(value, int) or not 0 <= value <= _MAX_SEED:
            return f"expected an integer from 0 to {_MAX_SEED}"
    elif not isinstance(value, int | float):
        return "expected a number"
    elif name == "temperature" and not 0 <= value <= 2:
        return "expected a number from 0 to 2"
    elif name == "top_p" and not 0 < value <= 1:
        return "expected a number above 0 and at most 1"
    return None


def _language(code: str | None, option: str) -> str | None:
    if code is None:
        return None
    try:
        return normalise_language(code)
    except ValueError as error:
        raise ProducerError(f"{option}: {error}") from None


def _reject_foreign_options(kind: str, options: SubmitOptions) -> None:
    # An option of another kind would be silently ignored, which hides a typo in --kind.
    foreign = {
        "translate": ("target_lang", "source_lang"),
        "write": ("template", "template_language", *SAMPLING_FIELDS),
        "moderate": ("thresholds",),
    }
    for owner, names in foreign.items():
        if owner == kind:
            continue
        for name in names:
            if getattr(options, name) is not None:
                flags = {"template_language": "--template-lang", "thresholds": "--threshold"}
                flag = flags.get(name, "--" + name.replace("_", "-"))
                raise ProducerError(f"{flag} applies to --kind {owner} only, not {kind}")
