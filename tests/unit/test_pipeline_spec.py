"""The pipeline file: parsing, validation with locations, cron schedules and beat entries."""

from __future__ import annotations

import textwrap
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from llmjobs.errors import PipelineError, PipelineFileInvalid
from llmjobs.pipelines.beat import CronSchedule, beat_schedule
from llmjobs.pipelines.filters import StepOutcome
from llmjobs.pipelines.schedule import next_fire, previous_fire
from llmjobs.pipelines.spec import FilesSource, SqlSource, check_pipeline_file, load_pipeline_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipelines" / "nightly.yaml"
SHANGHAI = "Asia/Shanghai"

VALID = """\
pipelines:
  nightly:
    schedule: "0 2 * * *"
    timezone: Asia/Shanghai
    source:
      files: {glob: "inbox/*.csv", text_column: TEXT}
    steps:
      - kind: moderate
      - kind: translate
        target_lang: en
        filter: {decision: {in: [allow]}}
      - kind: write
        name: headline
        template: headline
    exports:
      - jsonl: "out/{date}/headlines.jsonl"
      - csv: "out/{date}/headlines.csv"
  from-table:
    schedule: "30 1 * * 1-5"
    timezone: UTC
    catch_up: skip
    source:
      sql: {url_env: COMMENTS_DB, table: comments, id_column: id, text_column: body,
            watermark_column: updated_at}
    steps:
      - kind: moderate
"""


def write_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipelines.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    _parsed, problems = check_pipeline_file(write_file(tmp_path, text))
    return [problem.describe() for problem in problems]


def test_valid_file_parses(tmp_path: Path) -> None:
    parsed = load_pipeline_file(write_file(tmp_path, VALID))

    nightly = parsed.get("nightly")
    assert nightly.schedule == "0 2 * * *"
    assert nightly.timezone == SHANGHAI
    assert nightly.catch_up == "latest"
    assert isinstance(nightly.source, FilesSource)
    assert nightly.source.text_column == "TEXT"
    assert [step.name for step in nightly.steps] == ["moderate", "translate", "headline"]
    assert nightly.steps[1].params == {"target_lang": "en"}
    assert nightly.steps[1].filter is not None
    assert nightly.steps[1].filter.matches(StepOutcome("succeeded", {"decision": "allow"}))
    assert [export.format for export in nightly.exports] == ["jsonl", "csv"]
    table = parsed.get("from-table")
    assert isinstance(table.source, SqlSource)
    assert table.catch_up == "skip"


def test_export_path_resolves_against_file(tmp_path: Path) -> None:
    nightly = load_pipeline_file(write_file(tmp_path, VALID)).get("nightly")

    path = nightly.resolve_path("out/{date}/x-{pipeline}.jsonl", Path("/home"), date(2026, 12, 5))

    assert path == tmp_path.resolve() / "out" / "2026-12-05" / "x-nightly.jsonl"


def test_unknown_pipeline_name(tmp_path: Path) -> None:
    parsed = load_pipeline_file(write_file(tmp_path, VALID))

    with pytest.raises(PipelineError, match="defined pipelines: from-table, nightly"):
        parsed.get("weekly")


def test_example_file_is_valid() -> None:
    _parsed, problems = check_pipeline_file(EXAMPLE)

    assert problems == []


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        pytest.param("kind: translate", "kind: summarise", ":9:15: pipelines.nightly.steps[1].kind: "
                     "unknown kind 'summarise'", id="unknown-kind"),
        pytest.param('"0 2 * * *"', '"0 25 * * *"', ":3:15: pipelines.nightly.schedule: invalid cron "
                     "expression '0 25 * * *': the hour field '25' is invalid", id="bad-cron"),
        pytest.param('"0 2 * * *"', '"61 2 * * *"', "the minute field '61' is invalid; it takes 0-59",
                     id="minute-out-of-range"),
        pytest.param('"0 2 * * *"', '"0 2 * *"', ":3:15: pipelines.nightly.schedule: invalid cron "
                     "expression '0 2 * *': expected five fields", id="four-field-cron"),
        pytest.param("decision: {in", "decison: {in", ":11:27: pipelines.nightly.steps[1].filter.decison: "
                     "unknown field 'decison'", id="filter-unknown-field"),
        pytest.param("timezone: Asia/Shanghai", "timezone: Asia/Shanghia",
                     ":4:15: pipelines.nightly.timezone: unknown time zone 'Asia/Shanghia'",
                     id="unknown-time-zone"),
        pytest.param("target_lang: en", "target_lang: xx-notalanguage",
                     ":10:22: pipelines.nightly.steps[1].target_lang:", id="bad-language"),
        pytest.param("template: headline", "template: haiku",
                     ":14:19: pipelines.nightly.steps[2].template: unknown template 'haiku'",
                     id="unknown-template"),
        pytest.param("out/{date}/headlines.jsonl", "out/{day}/headlines.jsonl",
                     ":16:16: pipelines.nightly.exports[0].jsonl: unknown placeholder {day}",
                     id="unknown-placeholder"),
        pytest.param("catch_up: skip", "catch_up: all", ":21:15: pipelines.from-table.catch_up: "
                     "invalid policy 'all'", id="unknown-catch-up"),
        pytest.param("url_env: COMMENTS_DB", "url_env: postgresql://x",
                     ":23:22: pipelines.from-table.source.sql.url_env: invalid environment variable",
                     id="url-in-file"),
        pytest.param("        name: headline\n", "        name: translate\n",
                     ":13:15: pipelines.nightly.steps[2].name: duplicate step name 'translate'",
                     id="duplicate-step-name"),
        pytest.param("      - kind: moderate\n      - kind: translate",
                     "      - kind: moderate\n        filter: {flagged: false}\n      - kind: translate",
                     "pipelines.nightly.steps[0].filter: the first step has no previous step",
                     id="filter-on-first-step"),
    ],
)
def test_invalid_entry_located(tmp_path: Path, replace: str, by: str, expected: str) -> None:
    assert replace in VALID

    problems = problems_of(tmp_path, VALID.replace(replace, by, 1))

    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert problems[0].startswith(str(tmp_path / "pipelines.yaml"))


def test_missing_source_reported(tmp_path: Path) -> None:
    text = VALID.replace('    source:\n      files: {glob: "inbox/*.csv", text_column: TEXT}\n', "")

    problems = problems_of(tmp_path, text)

    assert len(problems) == 1
    assert "pipelines.nightly.source: missing source" in problems[0]


def test_every_problem_reported(tmp_path: Path) -> None:
    text = (VALID.replace("kind: translate", "kind: summarise")
                 .replace('"0 2 * * *"', '"61 2 * * *"')
                 .replace("timezone: UTC", "timezone: Nowhere/City"))

    with pytest.raises(PipelineFileInvalid) as raised:
        load_pipeline_file(write_file(tmp_path, text))

    keys = [problem.dotted_key for problem in raised.value.problems]
    assert keys == ["pipelines.nightly.schedule", "pipelines.nightly.steps[1].kind",
                    "pipelines.from-table.timezone"]


def test_invalid_yaml_located(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "pipelines:\n  nightly: [unclosed\n")

    assert len(problems) == 1
    assert "invalid YAML" in problems[0]
    assert ":3:1:" in problems[0]


def test_duplicate_key_located(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, VALID.replace("    timezone: UTC\n",
                                                   "    timezone: UTC\n    timezone: UTC\n"))

    assert len(problems) == 1
    assert ":21:5: pipelines.from-table.timezone: duplicate key" in problems[0]


@pytest.mark.parametrize(
    ("now", "previous", "following"),
    [
        pytest.param(datetime(2026, 12, 4, 17, 59, tzinfo=timezone.utc), "2026-12-04T02:00:00+08:00",
                     "2026-12-05T02:00:00+08:00", id="before-fire"),
        pytest.param(datetime(2026, 12, 4, 18, 0, tzinfo=timezone.utc), "2026-12-05T02:00:00+08:00",
                     "2026-12-06T02:00:00+08:00", id="at-fire"),
        pytest.param(datetime(2026, 12, 5, 9, 0, tzinfo=timezone.utc), "2026-12-05T02:00:00+08:00",
                     "2026-12-06T02:00:00+08:00", id="after-fire"),
    ],
)
def test_cron_in_time_zone(now: datetime, previous: str, following: str) -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(SHANGHAI)

    assert previous_fire("0 2 * * *", zone, now).isoformat() == previous
    assert next_fire("0 2 * * *", zone, now).isoformat() == following


def test_cron_schedule_is_due() -> None:
    now = [datetime(2026, 12, 4, 17, 0, tzinfo=timezone.utc)]
    schedule = CronSchedule("0 2 * * *", SHANGHAI, nowfun=lambda: now[0])
    last_run = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)

    before = schedule.is_due(last_run)
    now[0] = datetime(2026, 12, 4, 18, 0, 5, tzinfo=timezone.utc)
    after = schedule.is_due(last_run)

    assert before.is_due is False
    assert before.next == 3600.0
    assert after.is_due is True
    assert after.next == pytest.approx(86395.0)
    assert schedule.scheduled_date_text() == "2026-12-05"


def test_beat_entry_sends_name_and_date(tmp_path: Path) -> None:
    from celery.beat import BeatLazyFunc

    parsed = load_pipeline_file(write_file(tmp_path, VALID))
    now = datetime(2026, 12, 4, 18, 0, 5, tzinfo=timezone.utc)

    entries = beat_schedule(parsed.pipelines, nowfun=lambda: now)

    entry = entries["pipeline:nightly"]
    assert entry["task"] == "llmjobs.run_pipeline"
    assert entry["options"]["queue"] == "llmjobs.pipelines.nightly"
    name, day = entry["args"]
    assert name == "nightly"
    assert isinstance(day, BeatLazyFunc)
    assert day() == "2026-12-05"
