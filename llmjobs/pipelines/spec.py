"""The pipeline file: parse the YAML, check every entry, and build typed pipeline specs.

Validation collects every problem (with its file:line:column and key path) instead of
stopping at the first, so `llmjobs pipeline validate` can list them all at once.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from llmjobs.config import KINDS
from llmjobs.errors import PipelineError, PipelineFileInvalid
from llmjobs.pipelines.document import Document, DocumentError, KeyPath, Problem, load_document
from llmjobs.pipelines.filters import Condition, parse_filter

CATCH_UP_POLICIES = ("latest", "skip")
FILE_FORMATS = ("auto", "jsonl", "csv", "tsv")
EXPORT_FORMATS = ("jsonl", "csv", "sql")
PRIORITIES = ("high", "normal", "low")
# Placeholders of export paths; a source glob accepts only {home}.
PATH_PLACEHOLDERS = ("date", "pipeline", "home")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_RESERVED_STEP_NAMES = ("id", "text")
_STEP_KEYS = ("kind", "name", "filter", "priority")
# Parameters of each kind that a step may set, besides _STEP_KEYS.
STEP_PARAMS: dict[str, tuple[str, ...]] = {
    "moderate": ("thresholds",),
    "translate": ("target_lang", "source_lang"),
    "write": ("template", "template_language", "variables", "max_tokens", "temperature", "top_p",
              "seed"),
}


@dataclass(frozen=True)
class FilesSource:
    """New files matching a glob; each (path, sha256) is read by one run only."""

    glob: str
    format: str = "auto"
    encoding: str | None = None
    text_column: str | None = None
    id_column: str | None = None


@dataclass(frozen=True)
class SqlSource:
    """Rows of a table whose watermark column is above the value the last run reached."""

    url_env: str
    table: str
    id_column: str
    text_column: str
    watermark_column: str
    schema: str | None = None


@dataclass(frozen=True)
class StepSpec:
    """One step: a kind, its parameters, and the filter on the previous step's results."""

    index: int
    name: str
    kind: str
    params: Mapping[str, Any]
    filter: Condition | None = None
    priority: str = "normal"


@dataclass(frozen=True)
class ExportSpec:
    """Where a run's surviving items go: a JSONL or CSV file, or a SQL table."""

    format: str
    path: str | None = None
    url_env: str | None = None
    table: str | None = None

    @property
    def target(self) -> str:
        return self.path if self.path is not None else f"{self.url_env}:{self.table}"


@dataclass(frozen=True)
class PipelineSpec:
    """One named pipeline of a pipeline file."""

    name: str
    schedule: str
    timezone: str
    catch_up: str
    source: FilesSource | SqlSource
    steps: tuple[StepSpec, ...]
    exports: tuple[ExportSpec, ...]
    # Relative paths in the file resolve against the file's folder, as in docker-compose.
    base_dir: Path
    description: str | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def today(self, now: datetime) -> date:
        """Return the date of an aware `now` in the pipeline's time zone."""
        return now.astimezone(self.zone).date()

    def resolve_path(self, template: str, home: Path, day: date | None = None) -> Path:
        """Fill a path's placeholders and make it absolute against the file's folder."""
        values = {"home": str(home), "pipeline": self.name,
                  "date": day.isoformat() if day is not None else "{date}"}
        text = fill_placeholders(template, values)
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base_dir / path


@dataclass(frozen=True)
class PipelineFile:
    """The pipelines of one file, by name."""

    path: Path
    pipelines: Mapping[str, PipelineSpec] = field(default_factory=dict)

    def get(self, name: str) -> PipelineSpec:
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise PipelineError(
                f"pipeline {name!r} is not defined in {self.path}; defined pipelines: {known}"
            ) from None


def load_pipeline_file(path: Path, templates_file: Path | None = None) -> PipelineFile:
    """Parse and validate a pipeline file; raise PipelineFileInvalid listing every problem."""
    parsed, problems = check_pipeline_file(path, templates_file)
    if problems or parsed is None:
        raise PipelineFileInvalid(problems)
    return parsed


def check_pipeline_file(
    path: Path, templates_file: Path | None = None, text: str | None = None
) -> tuple[PipelineFile | None, list[Problem]]:
    """Return the parsed file (None when invalid) and every problem found in it."""
    try:
        document = load_document(path, text)
    except DocumentError as error:
        return None, [error.problem]
    checker = _Checker(document, templates_file)
    pipelines = checker.check_root()
    if checker.problems:
        return None, checker.problems
    return PipelineFile(path, pipelines), []


def fill_placeholders(template: str, values: Mapping[str, str]) -> str:
    """Replace {name} placeholders by plain substitution, never str.format on user values."""
    parts = []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            parts.append(values[name])
    return "".join(parts)


class _Checker:
    def __init__(self, document: Document, templates_file: Path | None) -> None:
        self.document = document
        self.templates_file = templates_file
        self.problems: list[Problem] = []

    def report(self, key_path: KeyPath, message: str) -> None:
        self.problems.append(self.document.problem(key_path, message))

    def mapping(self, value: Any, key_path: KeyPath, allowed: tuple[str, ...],
                what: str) -> dict[str, Any] | None:
        if not isinstance(value, Mapping):
            self.report(key_path, f"{what} must be a mapping, got {_type_name(value)}")
            return None
        for key in value:
            if key not in allowed:
                self.report((*key_path, key), f"unknown key {key!r} in {what}; "
                                              f"known keys: {', '.join(allowed)}")
        return dict(value)

    def string(self, values: Mapping[str, Any], key: str, key_path: KeyPath,
               required: bool = False) -> str | None:
        value = values.get(key)
        if value is None:
            if required:
                self.report(key_path, f"missing {key!r}")
            return None
        if not isinstance(value, str) or not value.strip():
            self.report((*key_path, key), f"must be a non-empty string, got {value!r}")
            return None
        return value

    def check_root(self) -> dict[str, PipelineSpec]:
        root = self.mapping(self.document.data, (), ("pipelines",), "the pipeline file")
        if root is None:
            return {}
        pipelines = root.get("pipelines")
        if not isinstance(pipelines, Mapping) or not pipelines:
            self.report(("pipelines",), "missing 'pipelines': a mapping of pipeline name to pipeline")
            return {}
        specs = {}
        for name, body in pipelines.items():
            if not _NAME.match(name):
                self.report(("pipelines", name), f"invalid pipeline name {name!r}; use letters, "
                                                 "digits, '.', '_' and '-' (at most 100)")
            spec = self.check_pipeline(name, body, ("pipelines", name))
            if spec is not None:
                specs[name] = spec
        return specs

    def check_pipeline(self, name: str, body: Any, key_path: KeyPath) -> PipelineSpec | None:
        allowed = ("description", "schedule", "timezone", "catch_up", "source", "steps", "exports")
        values = self.mapping(body, key_path, allowed, f"pipeline {name!r}")
        if values is None:
            return None
        schedule = self.check_schedule(values, key_path)
        zone = self.check_timezone(values, key_path)
        catch_up = values.get("catch_up", "latest")
        if catch_up not in CATCH_UP_POLICIES:
            self.report((*key_path, "catch_up"), f"invalid policy {catch_up!r}; expected "
                                                 f"{' or '.join(CATCH_UP_POLICIES)}")
        source = self.check_source(values.get("source"), (*key_path, "source"))
        steps = self.check_steps(values.get("steps"), (*key_path, "steps"))
        exports = self.check_exports(values.get("exports", []), (*key_path, "exports"))
        description = values.get("description")
        if source is None or schedule is None or zone is None:
            return None
        return PipelineSpec(
            name=name, schedule=schedule, timezone=zone, catch_up=str(catch_up), source=source,
            steps=tuple(steps), exports=tuple(exports), base_dir=self.document.path.parent.resolve(),
            description=str(description) if description is not None else None,
        )

    def check_schedule(self, values: Mapping[str, Any], key_path: KeyPath) -> str | None:
        schedule = self.string(values, "schedule", key_path, required=True)
        if schedule is None:
            return None
        problem = cron_problem(schedule)
        if problem is not None:
            self.report((*key_path, "schedule"), f"invalid cron expression {schedule!r}: {problem}")
            return None
        return schedule

    def check_timezone(self, values: Mapping[str, Any], key_path: KeyPath) -> str | None:
        name = self.string(values, "timezone", key_path, required=True)
        if name is None:
            return None
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.report((*key_path, "timezone"),
                        f"unknown time zone {name!r}; use an IANA name such as Asia/Shanghai or UTC")
            return None
        return name

    def check_source(self, body: Any, key_path: KeyPath) -> FilesSource | SqlSource | None:
        if body is None:
            self.report(key_path, "missing source: add 'source: {files: {glob: ...}}' or "
                                  "'source: {sql: {...}}'")
            return None
        values = self.mapping(body, key_path, ("files", "sql"), "source")
        if values is None:
            return None
        if len(values) != 1:
            self.report(key_path, "a source needs exactly one of 'files' or 'sql'")
            return None
        if "files" in values:
            return self.check_files_source(values["files"], (*key_path, "files"))
        if "sql" in values:
            return self.check_sql_source(values["sql"], (*key_path, "sql"))
        return None

    def check_files_source(self, body: Any, key_path: KeyPath) -> FilesSource | None:
        if isinstance(body, str):
            body = {"glob": body}
        allowed = ("glob", "format", "encoding", "text_column", "id_column")
        values = self.mapping(body, key_path, allowed, "a files source")
        if values is None:
            return None
        glob = self.string(values, "glob", key_path, required=True)
        if glob is not None:
            self.check_placeholders(glob, (*key_path, "glob"), ("home",))
        file_format = values.get("format", "auto")
        if file_format not in FILE_FORMATS:
            self.report((*key_path, "format"), f"invalid format {file_format!r}; expected one of "
                                               f"{', '.join(FILE_FORMATS)}")
        encoding = self.string(values, "encoding", key_path)
        text_column = self.string(values, "text_column", key_path)
        id_column = self.string(values, "id_column", key_path)
        if glob is None:
            return None
        return FilesSource(glob, str(file_format), encoding, text_column, id_column)

    def check_sql_source(self, body: Any, key_path: KeyPath) -> SqlSource | None:
        allowed = ("url_env", "table", "schema", "id_column", "text_column", "watermark_column")
        values = self.mapping(body, key_path, allowed, "a sql source")
        if values is None:
            return None
        url_env = self.check_env_name(values, key_path)
        names = {}
        for key in ("table", "id_column", "text_column", "watermark_column", "schema"):
            value = self.string(values, key, key_path, required=key != "schema")
            if value is not None and not _SQL_NAME.match(value):
                self.report((*key_path, key), f"invalid SQL name {value!r}; use letters, digits "
                                              "and '_' (a name, not an expression)")
                value = None
            names[key] = value
        if url_env is None or None in (names["table"], names["id_column"], names["text_column"],
                                       names["watermark_column"]):
            return None
        return SqlSource(url_env, str(names["table"]), str(names["id_column"]),
                         str(names["text_column"]), str(names["watermark_column"]), names["schema"])

    def check_env_name(self, values: Mapping[str, Any], key_path: KeyPath) -> str | None:
        url_env = self.string(values, "url_env", key_path, required=True)
        if url_env is not None and not _ENV_NAME.match(url_env):
            self.report((*key_path, "url_env"), f"invalid environment variable name {url_env!r}; "
                                                "the URL itself never goes in the file")
            return None
        return url_env

    def check_steps(self, body: Any, key_path: KeyPath) -> list[StepSpec]:
        if not isinstance(body, list) or not body:
            self.report(key_path, "missing steps: a non-empty list such as [{kind: moderate}]")
            return []
        steps: list[StepSpec] = []
        names: dict[str, int] = {}
        previous_kind: str | None = None
        for index, item in enumerate(body):
            step = self.check_step(index, item, (*key_path, index), previous_kind)
            previous_kind = step.kind if step is not None else None
            if step is None:
                continue
            if step.name in names:
                self.report((*key_path, index, "name"),
                            f"duplicate step name {step.name!r} (also step {names[step.name]}); "
                            "give each step of the same kind a distinct 'name'")
            names[step.name] = index
            steps.append(step)
        return steps

    def check_step(self, index: int, body: Any, key_path: KeyPath,
                   previous_kind: str | None) -> StepSpec | None:
        if not isinstance(body, Mapping):
            self.report(key_path, f"a step must be a mapping, got {_type_name(body)}")
            return None
        kind = body.get("kind")
        if kind not in KINDS:
            message = "missing 'kind'" if kind is None else f"unknown kind {kind!r}"
            self.report((*key_path, "kind"), f"{message}; expected one of {', '.join(KINDS)}")
            return None
        allowed = (*_STEP_KEYS, *STEP_PARAMS[kind])
        values = self.mapping(body, key_path, allowed, f"a {kind} step")
        if values is None:
            return None
        name = values.get("name", kind)
        if not isinstance(name, str) or not _NAME.match(name) or name in _RESERVED_STEP_NAMES:
            self.report((*key_path, "name"), f"invalid step name {name!r}; use letters, digits, "
                                             "'.', '_' and '-', and not 'id' or 'text'")
        priority = values.get("priority", "normal")
        if priority not in PRIORITIES:
            self.report((*key_path, "priority"), f"invalid priority {priority!r}; expected one of "
                                                 f"{', '.join(PRIORITIES)}")
        condition = None
        if "filter" in values:
            if index == 0:
                self.report((*key_path, "filter"), "the first step has no previous step to filter "
                                                   "on; remove its filter")
            elif previous_kind is not None:
                condition = parse_filter(values["filter"], previous_kind, (*key_path, "filter"),
                                         self.report)
        params = {key: value for key, value in values.items() if key not in _STEP_KEYS}
        from llmjobs.pipelines.params import check_step_params

        for key, message in check_step_params(kind, params, self.templates_file):
            self.report((*key_path, key) if key else key_path, message)
        return StepSpec(index, str(name), kind, params, condition, str(priority))

    def check_exports(self, body: Any, key_path: KeyPath) -> list[ExportSpec]:
        if not isinstance(body, list):
            self.report(key_path, "exports must be a list such as [{jsonl: out/{date}/items.jsonl}]")
            return []
        exports = []
        for index, item in enumerate(body):
            export = self.check_export(item, (*key_path, index))
            if export is not None:
                exports.append(export)
        return exports

    def check_export(self, body: Any, key_path: KeyPath) -> ExportSpec | None:
        values = self.mapping(body, key_path, EXPORT_FORMATS, "an export")
        if values is None:
            return None
        if len(values) != 1:
            self.report(key_path, "an export needs exactly one of 'jsonl', 'csv' or 'sql'")
            return None
        export_format, target = next(iter(values.items()))
        target_path = (*key_path, export_format)
        if export_format == "sql":
            table_values = self.mapping(target, target_path, ("url_env", "table"), "a sql export")
            if table_values is None:
                return None
            url_env = self.check_env_name(table_values, target_path)
            table = self.string(table_values, "table", target_path, required=True)
            if table is not None and not _SQL_NAME.match(table):
                self.report((*target_path, "table"), f"invalid SQL table name {table!r}")
                return None
            if url_env is None or table is None:
                return None
            return ExportSpec("sql", url_env=url_env, table=table)
        if not isinstance(target, str) or not target.strip():
            self.report(target_path, f"must be a file path such as out/{{date}}/items.{export_format}")
            return None
        if not self.check_placeholders(target, target_path, PATH_PLACEHOLDERS):
            return None
        return ExportSpec(str(export_format), path=target)

    def check_placeholders(self, text: str, key_path: KeyPath, allowed: tuple[str, ...]) -> bool:
        try:
            pieces = list(string.Formatter().parse(text))
        except ValueError as error:
            self.report(key_path, f"invalid path {text!r}: {error}")
            return False
        for _literal, name, spec, conversion in pieces:
            if name is not None and (name not in allowed or spec or conversion):
                self.report(key_path, f"unknown placeholder {{{name}}} in {text!r}; known: "
                                      + ", ".join(f"{{{known}}}" for known in allowed))
                return False
        return True


def producer_accepts(option: str) -> bool:
    """Return True when SubmitOptions has a field of this name."""
    from llmjobs.producer.options import SubmitOptions

    return option in {item.name for item in fields(SubmitOptions)}


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return type(value).__name__


# Cron fields in order, with the values each accepts (day-of-week 0 and 7 are both Sunday).
_CRON_FIELDS = (("minute", "0-59"), ("hour", "0-23"), ("day-of-month", "1-31"),
                ("month", "1-12 or jan-dec"), ("day-of-week", "0-7 or sun-sat"))


def cron_problem(expression: str) -> str | None:
    """Return what is wrong with a five-field cron expression, naming the field, or None."""
    fields = expression.split()
    if len(fields) != len(_CRON_FIELDS):
        return (f"expected five fields (minute hour day-of-month month day-of-week), got "
                f"{len(fields)}, such as '0 2 * * *'")
    if croniter.is_valid(expression):
        return None
    for index, (name, allowed) in enumerate(_CRON_FIELDS):
        alone = ["*"] * len(_CRON_FIELDS)
        alone[index] = fields[index]
        if not croniter.is_valid(" ".join(alone)):
            return (f"the {name} field {fields[index]!r} is invalid; it takes {allowed}, "
                    "lists, ranges and steps")
    return "the fields are each valid but cannot be combined; check the day-of-month and month"
