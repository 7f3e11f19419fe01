"""Named, versioned prompt templates for write jobs, built in or read from a TOML file.

A template's text uses `{field}` placeholders, where `{text}` is the row's text and other
fields come from the row's variables. Only plain names are allowed: a placeholder such as
`{x.__class__}` or `{x[0]}` is rejected, and rendering never calls `str.format`, so a
template cannot reach attributes or items of the values.

A user templates file looks like this (a name may also hold an array of tables, one per
version or language):

    [templates.my_name]
    version = 1
    language = "zh"
    text = "请为下面的文章写一个标题：{text}"
    description = "A title for an article"
"""

from __future__ import annotations

import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmjobs.errors import ConfigError, UnknownTemplate
from llmjobs.languages import normalise_language

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_LANGUAGE = "en"
_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class Template:
    """A prompt with `{field}` placeholders, identified by name, version and language."""

    name: str
    version: int
    language: str
    text: str
    description: str
    # Fields that render as an empty string when a row does not supply them.
    optional_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Parsing here rejects a bad template when it is defined, not when a job renders it.
        _parse(self.text, f"template {self.ref!r}")

    @property
    def ref(self) -> str:
        """The exact reference "name@version", as stored with a batch."""
        return f"{self.name}@{self.version}"

    @property
    def fields(self) -> tuple[str, ...]:
        """The placeholder names in order of first use; `text` is the row's text."""
        names: list[str] = []
        for _literal, field in _parse(self.text, f"template {self.ref!r}"):
            if field is not None and field not in names:
                names.append(field)
        return tuple(names)

    @property
    def required_fields(self) -> tuple[str, ...]:
        return tuple(name for name in self.fields if name not in self.optional_fields)

    def render(self, values: Mapping[str, str]) -> str:
        """Fill the placeholders; raise ValueError naming the first missing field."""
        parts: list[str] = []
        for literal, field in _parse(self.text, f"template {self.ref!r}"):
            parts.append(literal)
            if field is None:
                continue
            value = values.get(field)
            if value is None:
                if field in self.optional_fields:
                    continue
                raise ValueError(
                    f"template {self.ref!r} needs field {field!r}, which is missing; "
                    f"supply it as a variable (fields: {', '.join(self.fields)})"
                )
            if not isinstance(value, str):
                raise ValueError(
                    f"template {self.ref!r} field {field!r} must be a string, got {value!r}"
                )
            parts.append(value)
        return "".join(parts)


def _parse(text: str, what: str) -> list[tuple[str, str | None]]:
    """Split template text into (literal, field name or None) pairs, rejecting unsafe fields."""
    try:
        pieces = list(_FORMATTER.parse(text))
    except ValueError as error:
        raise ValueError(f"{what} is invalid: {error}; write a literal brace as {{{{ or }}}}") from None
    result: list[tuple[str, str | None]] = []
    for literal, field, format_spec, conversion in pieces:
        if field is None:
            result.append((literal, None))
            continue
        if not field.isidentifier():
            raise ValueError(
                f"{what} has placeholder {{{field}}}; placeholders must be plain names "
                "such as {text} or {title}, without attribute access, indexes or positions"
            )
        if format_spec or conversion:
            raise ValueError(
                f"{what} has placeholder {{{field}}} with a conversion or format spec; "
                "use a plain {name}"
            )
        result.append((literal, field))
    return result


_BUILT_IN: tuple[Template, ...] = (
    Template(
        "summary", 1, "en",
        "Summarise the following text in two or three sentences. Keep its facts and "
        "its language register, and add nothing that it does not say.\n\nText:\n{text}\n\nSummary:",
        "A short summary of an article or document.",
    ),
    Template(
        "summary", 1, "zh",
        "请用两到三句话概括下面的文本，保留其中的事实，不要添加原文没有的内容。\n\n文本：\n{text}\n\n摘要：",
        "文章或文档的简短摘要。",
    ),
    Template(
        "headline", 1, "en",
        "Write one headline of at most 15 words for the following article. Reply with the "
        "headline only.\n\nArticle:\n{text}\n\nHeadline:",
        "One headline for an article.",
    ),
    Template(
        "headline", 1, "zh",
        "请为下面的文章写一个不超过25个字的标题，只输出标题。\n\n文章：\n{text}\n\n标题：",
        "为文章写一个标题。",
    ),
    Template(
        "product_description", 1, "en",
        "Write a product description of about 80 words for an online shop. Use only the "
        "facts given.\n\nProduct:\n{text}\n{attributes}\n\nDescription:",
        "A shop description from product facts; `attributes` (one per line) is optional.",
        optional_fields=("attributes",),
    ),
    Template(
        "product_description", 1, "zh",
        "请根据以下信息为网店写一段约150字的商品描述，只使用给出的信息。\n\n商品：\n{text}\n{attributes}\n\n描述：",
        "根据商品信息写网店描述；`attributes`（每行一项）可省略。",
        optional_fields=("attributes",),
    ),
)


def built_in_templates() -> tuple[Template, ...]:
    return _BUILT_IN


def get_template(
    name: str, language: str | None = None, templates_file: Path | None = None
) -> Template:
    """Find a template by "name" (latest version) or "name@version" in one language.

    `language` is any code that `normalise_language` accepts and defaults to English.
    Raises UnknownTemplate naming the known templates, and ConfigError for an invalid
    templates file.
    """
    base, version = _split_ref(name)
    wanted = normalise_language(language) if language else DEFAULT_LANGUAGE
    templates = all_templates(templates_file)

    candidates = [t for t in templates if t.name == base]
    if not candidates:
        known = ", ".join(sorted({t.name for t in templates}))
        raise UnknownTemplate(f"unknown template {name!r}; known templates: {known}")
    in_language = [t for t in candidates if t.language == wanted]
    if not in_language:
        languages = ", ".join(sorted({t.language for t in candidates}))
        raise UnknownTemplate(
            f"template {base!r} has no {wanted!r} version; it exists in: {languages}"
        )
    if version is None:
        return max(in_language, key=lambda t: t.version)
    for template in in_language:
        if template.version == version:
            return template
    versions = ", ".join(str(t.version) for t in sorted(in_language, key=lambda t: t.version))
    raise UnknownTemplate(
        f"template {base!r} has no version {version} in {wanted!r}; versions: {versions}"
    )


def all_templates(templates_file: Path | None = None) -> tuple[Template, ...]:
    """Return the built-in templates followed by those of the templates file, if any."""
    if templates_file is None:
        return _BUILT_IN
    path = Path(templates_file).expanduser()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"templates file {str(path)!r} not found; fix the templates_file setting"
        ) from None
    return _BUILT_IN + _load_file(path, stat.st_mtime_ns, stat.st_size)


def _split_ref(name: str) -> tuple[str, int | None]:
    base, separator, version_text = name.strip().partition("@")
    if not separator:
        return base, None
    if not version_text.isdigit() or int(version_text) < 1:
        raise UnknownTemplate(
            f"template reference {name!r} is invalid; write NAME or NAME@VERSION, e.g. headline@1"
        )
    return base, int(version_text)


# Keyed by modification time and size, so an edited file is read again.
@lru_cache(maxsize=8)
def _load_file(path: Path, _mtime_ns: int, _size: int) -> tuple[Template, ...]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"templates file {str(path)!r} is not valid TOML: {error}") from None

    table = data.get("templates")
    if not isinstance(table, dict) or not table:
        raise ConfigError(
            f"templates file {str(path)!r} has no [templates.NAME] tables; "
            'add one with version, language and text, e.g. [templates.my_name] version = 1 ...'
        )
    loaded: list[Template] = []
    taken = {(t.name, t.version, t.language) for t in _BUILT_IN}
    for name, entries in table.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            template = _template_from_toml(path, str(name), entry)
            key = (template.name, template.version, template.language)
            if key in taken:
                raise ConfigError(
                    f"templates file {str(path)!r} defines {template.ref!r} in "
                    f"{template.language!r} twice or over a built-in template; "
                    "give it a new version or name"
                )
            taken.add(key)
            loaded.append(template)
    return tuple(loaded)


def _template_from_toml(path: Path, name: str, entry: Any) -> Template:
    where = f"templates file {str(path)!r}, template {name!r}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a table with version, language and text")
    if "@" in name or not name.strip():
        raise ConfigError(f"{where}: a template name must be non-empty and contain no '@'")
    version = entry.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"{where}: version must be a positive integer, got {version!r}")
    text = entry.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: text must be a non-empty string")
    try:
        language = normalise_language(str(entry.get("language", DEFAULT_LANGUAGE)))
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    optional = entry.get("optional_fields", [])
    if not isinstance(optional, list) or not all(isinstance(item, str) for item in optional):
        raise ConfigError(f"{where}: optional_fields must be a list of field names")
    try:
        return Template(
            name=name,
            version=version,
            language=language,
            text=text,
            description=str(entry.get("description", "")),
            optional_fields=tuple(optional),
        )
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
