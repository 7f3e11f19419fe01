"""Step parameters: their checks when the file is validated, and the SubmitOptions they become."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmjobs.errors import UnknownTemplate
from llmjobs.languages import normalise_language

# The write kind's sampling options, checked by the producer's own rule.
_SAMPLING = ("max_tokens", "temperature", "top_p", "seed")


def check_step_params(
    kind: str, params: Mapping[str, Any], templates_file: Path | None
) -> list[tuple[str | None, str]]:
    """Return (parameter, reason) for each invalid parameter of a step; None names the step."""
    problems: list[tuple[str | None, str]] = []
    if kind == "moderate":
        problems += _check_thresholds(params)
    elif kind == "translate":
        problems += _check_languages(params)
    elif kind == "write":
        problems += _check_write(params, templates_file)
    return problems


def _check_thresholds(params: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    from llmjobs.pipelines.spec import producer_accepts
    from llmjobs.worker.taxonomy import parse_thresholds

    if "thresholds" not in params:
        return []
    try:
        parse_thresholds(params["thresholds"])
    except ValueError as error:
        return [("thresholds", str(error))]
    if not producer_accepts("thresholds"):
        return [("thresholds", "this llmjobs version cannot pass moderation thresholds to a "
                               "batch; remove them to use the default thresholds")]
    return []


def _check_languages(params: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    problems: list[tuple[str | None, str]] = []
    if "target_lang" not in params:
        problems.append((None, "a translate step needs target_lang, such as 'target_lang: en'"))
    codes = {}
    for key in ("target_lang", "source_lang"):
        if key not in params:
            continue
        try:
            codes[key] = normalise_language(str(params[key]))
        except ValueError as error:
            problems.append((key, str(error)))
    if codes.get("target_lang") is not None and codes.get("target_lang") == codes.get("source_lang"):
        problems.append(("target_lang", f"is the same as source_lang {codes['source_lang']!r}"))
    return problems


def _check_write(params: Mapping[str, Any], templates_file: Path | None) -> list[tuple[str | None, str]]:
    from llmjobs.producer.plan import sampling_error
    from llmjobs.templates import get_template

    problems: list[tuple[str | None, str]] = []
    template = params.get("template")
    if not isinstance(template, str) or not template:
        problems.append(("template" if "template" in params else None,
                         "a write step needs a template name, such as 'template: headline'"))
    else:
        try:
            found = get_template(template, params.get("template_language"), templates_file)
        except (UnknownTemplate, ValueError) as error:
            problems.append(("template", str(error)))
        else:
            missing = [name for name in found.required_fields
                       if name != "text" and name not in (params.get("variables") or {})]
            if missing:
                problems.append(("variables", f"template {found.ref!r} needs the variables "
                                              f"{', '.join(missing)}"))
    variables = params.get("variables")
    if variables is not None and (
        not isinstance(variables, Mapping)
        or not all(isinstance(value, str) for value in variables.values())
    ):
        problems.append(("variables", "must be a mapping of names to strings"))
    for name in _SAMPLING:
        if name in params:
            reason = sampling_error(name, params[name])
            if reason:
                problems.append((name, f"invalid value {params[name]!r}: {reason}"))
    return problems


def submit_fields(kind: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split step parameters into SubmitOptions fields and fields added to every row."""
    options: dict[str, Any] = {}
    row_fields: dict[str, Any] = {}
    for key, value in params.items():
        if key == "variables":
            row_fields["variables"] = dict(value)
        else:
            options[key] = value
    return options, row_fields
