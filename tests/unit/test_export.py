"""The result writers: JSONL, CSV and the fixed-width table, and atomic output files."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from llmjobs.export import (
    FORMULA_ESCAPE,
    CsvWriter,
    ExportRow,
    JsonlWriter,
    TableWriter,
    atomic_output,
    csv_columns,
    escape_formula,
)
from llmjobs.models.queries import ResultRow
from llmjobs.textwidth import display_width, truncate

HARD_TEXTS = [
    "tab\there",
    "two\nlines",
    "windows\r\nline",
    'say "hi", then \'bye\'',
    "中文评论，含有标点。",
    "mixed 中英 text",
    "",
    "trailing space ",
]
FORMULA_TEXTS = ["=SUM(A1:A2)", "+1", "-2+3", "@cmd", "\tindented", "\rreturn"]


def _row(item_id: str, text: str, output: dict[str, Any] | None = None, *,
         status: str = "succeeded", error: tuple[str, str] | None = None) -> ResultRow:
    return ResultRow(
        job_id=len(item_id), item_id=item_id, seq=0, input_text=text, status=status,
        output=output, error_code=error[0] if error else None,
        error_message=error[1] if error else None, attempts=1,
    )


def _read_csv(data: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data, newline="")))


def test_csv_round_trip_hard_texts() -> None:
    stream = io.StringIO(newline="")
    writer = CsvWriter(stream, "translate")
    for number, text in enumerate(HARD_TEXTS):
        writer.write(ExportRow(_row(str(number), text, {"text": text[::-1]})))

    rows = _read_csv(stream.getvalue())

    assert [row["input"] for row in rows] == HARD_TEXTS
    assert [row["text"] for row in rows] == [text[::-1] for text in HARD_TEXTS]
    assert [row["id"] for row in rows] == [str(n) for n in range(len(HARD_TEXTS))]


@pytest.mark.parametrize("text", FORMULA_TEXTS, ids=repr)
def test_csv_escapes_formula(text: str) -> None:
    stream = io.StringIO(newline="")
    writer = CsvWriter(stream, "translate")
    writer.write(ExportRow(_row("1", text, {"text": text})))

    row = _read_csv(stream.getvalue())[0]

    assert row["input"] == FORMULA_ESCAPE + text
    assert row["text"] == FORMULA_ESCAPE + text
    assert row["input"].removeprefix(FORMULA_ESCAPE) == text


def test_csv_formula_escape_can_be_disabled() -> None:
    stream = io.StringIO(newline="")
    writer = CsvWriter(stream, "translate", escape_formulas=False)
    writer.write(ExportRow(_row("1", "=1+1", {"text": "=2"})))

    row = _read_csv(stream.getvalue())[0]

    assert row["input"] == "=1+1"
    assert row["text"] == "=2"


def test_escape_formula_leaves_plain_text() -> None:
    assert escape_formula("a=b") == "a=b"
    assert escape_formula("中文=") == "中文="
    assert escape_formula("") == ""


def test_csv_moderation_columns() -> None:
    stream = io.StringIO(newline="")
    writer = CsvWriter(stream, "moderate", categories=["hate", "violence"])
    output = {"decision": "block", "flagged": True}
    writer.write(ExportRow(_row("a", "text", output), {"hate": 0.91, "violence": -0.5}))
    writer.write(ExportRow(_row("b", "text", None, status="failed", error=("too_long", "=x"))))

    header, *_ = stream.getvalue().split("\r\n")
    rows = _read_csv(stream.getvalue())

    assert header.split(",") == csv_columns("moderate", ["hate", "violence"])
    assert rows[0]["decision"] == "block"
    assert rows[0]["flagged"] == "true"
    assert rows[0]["top_category"] == "hate"
    assert float(rows[0]["score_hate"]) == 0.91
    # A number is never escaped, so a negative score stays a number.
    assert rows[0]["score_violence"] == "-0.5"
    assert json.loads(rows[0]["output_json"]) == output
    assert rows[1]["error_code"] == "too_long"
    assert rows[1]["error_message"] == FORMULA_ESCAPE + "=x"
    assert rows[1]["score_hate"] == ""


@pytest.mark.parametrize(
    ("kind", "output", "expected"),
    [
        pytest.param("translate", {"text": "hello", "source_lang": "zh", "target_lang": "en"},
                     {"text": "hello", "source_lang": "zh", "target_lang": "en"}, id="translate"),
        pytest.param("write", {"text": "标题", "finish_reason": "length"},
                     {"text": "标题", "finish_reason": "length"}, id="write"),
    ],
)
def test_csv_text_kind_columns(kind: str, output: dict[str, Any],
                               expected: dict[str, str]) -> None:
    stream = io.StringIO(newline="")
    CsvWriter(stream, kind).write(ExportRow(_row("1", "input", output)))

    row = _read_csv(stream.getvalue())[0]

    for column, value in expected.items():
        assert row[column] == value
    assert json.loads(row["output_json"]) == output


def test_jsonl_keeps_unicode_and_one_line() -> None:
    stream = io.StringIO()
    writer = JsonlWriter(stream)
    text = "第一行\n第二行\u2028分隔"
    writer.write(ExportRow(_row("行1", text, {"text": "ok"})))

    lines = stream.getvalue().split("\n")

    assert lines[1:] == [""]
    assert len(lines[0].splitlines()) == 1
    assert "第一行" in lines[0]
    assert json.loads(lines[0]) == {
        "id": "行1", "status": "succeeded", "input": text, "output": {"text": "ok"},
        "error": None,
    }


def test_jsonl_error_object() -> None:
    stream = io.StringIO()
    JsonlWriter(stream).write(ExportRow(_row("x", "t", status="failed", error=("oom", "no memory"))))

    record = json.loads(stream.getvalue())

    assert record["error"] == {"code": "oom", "message": "no memory"}
    assert record["output"] is None


@pytest.mark.parametrize(
    ("text", "width"),
    [
        pytest.param("中文字符串很长很长", 7, id="odd-width-chinese"),
        pytest.param("中文字符串很长很长", 8, id="even-width-chinese"),
        pytest.param("a中b文c字d", 5, id="mixed"),
        pytest.param("e\u0301e\u0301e\u0301e\u0301", 3, id="combining-marks"),
        pytest.param("ＦＵＬＬＷＩＤＴＨ", 6, id="fullwidth"),
    ],
)
def test_truncate_never_splits_character(text: str, width: int) -> None:
    cut = truncate(text, width)

    assert display_width(cut) <= width
    assert cut.endswith("…")
    prefix = cut[:-1]
    assert text.startswith(prefix)
    # The character after the cut is never a combining mark cut off from its base.
    assert unicodedata.combining(text[len(prefix)]) == 0


def test_truncate_keeps_combining_mark() -> None:
    assert truncate("e\u0301e\u0301xyz", 3) == "e\u0301e\u0301…"


def test_truncate_short_text_unchanged() -> None:
    assert truncate("中文", 4) == "中文"


def test_table_rows_align() -> None:
    stream = io.StringIO()
    writer = TableWriter(stream, "translate")
    writer.write(ExportRow(_row("1", "很长的中文输入" * 10, {"text": "long English " * 10})))
    writer.write(ExportRow(_row("2", "short\ttext\nwith breaks", {"text": "ok"})))

    lines = stream.getvalue().splitlines()

    assert len(lines) == 3
    assert lines[0].split() == ["ID", "STATUS", "OUTPUT", "INPUT"]
    assert "很长的中文输入" in lines[1]
    assert lines[1].endswith("…")
    assert "short text with breaks" in lines[2]
    # The INPUT column starts at the same display column on every row.
    input_column = 16 + 9 + 40 + 3 * 2
    assert display_width(lines[0][:lines[0].index("INPUT")]) == input_column
    assert display_width(lines[1][:lines[1].index("很长")]) == input_column
    assert display_width(lines[2][:lines[2].index("short")]) == input_column
    assert display_width(lines[1]) <= input_column + 40


def test_atomic_output_replaces_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    with atomic_output(target) as stream:
        stream.write("new\n")
        assert target.read_text() == "old\n"

    assert target.read_text() == "new\n"
    assert [path.name for path in tmp_path.iterdir()] == ["out.jsonl"]


def test_atomic_output_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")

    with pytest.raises(RuntimeError), atomic_output(target) as stream:
        stream.write("partial")
        raise RuntimeError("export failed")

    assert target.read_text() == "old\n"
    assert [path.name for path in tmp_path.iterdir()] == ["out.csv"]


def test_atomic_output_new_file_readable(tmp_path: Path) -> None:
    target = tmp_path / "new.csv"

    with atomic_output(target) as stream:
        stream.write("x")

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
