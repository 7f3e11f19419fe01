"""Readers on real data sets read in place, and on small files with known defects."""

from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from llmjobs.config import Settings
from llmjobs.errors import DecodeError, ProducerError
from llmjobs.producer.options import SubmitOptions
from llmjobs.producer.plan import plan_batch
from llmjobs.producer.records import Record, Rejection
from llmjobs.producer.rules import rules_for
from llmjobs.producer.sources import FileInput
from llmjobs.producer.validation import JobRow, RowValidator

MEDICAL_CSV = "zh_medical_qa_gbk/样例_内科5000-6000.csv"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'unused.db'}")


def open_input(settings: Settings, path: Path, kind: str = "moderate", **options: Any) -> FileInput:
    return FileInput(path, SubmitOptions(**options), kind, settings)


def checked(
    settings: Settings, path: Path, kind: str = "moderate", **options: Any
) -> list[JobRow | Rejection]:
    """Read and validate every record of the file."""
    source = open_input(settings, path, kind, **options)
    validator = RowValidator(
        rules_for(plan_batch(settings, kind, SubmitOptions(**options))),
        track_ids=source.track_ids,
        compute_sha256=True,
    )
    return [validator.check(record) for record in source.records()]


def jobs_of(entries: list[JobRow | Rejection]) -> list[JobRow]:
    return [entry for entry in entries if isinstance(entry, JobRow)]


def rejections_of(entries: list[JobRow | Rejection]) -> list[Rejection]:
    return [entry for entry in entries if isinstance(entry, Rejection)]


# Real data sets.

def test_cold_bom_and_empty_header_cell(settings: Settings, shared_data: Path) -> None:
    path = shared_data / "cold_zh_offensive" / "test.csv"
    source = open_input(settings, path, text_column="TEXT")
    entries = checked(settings, path, text_column="TEXT")
    assert source.encoding == "utf-8"
    assert source.scanned.encoding.bom_length == 3
    assert len(jobs_of(entries)) == 5323
    assert rejections_of(entries) == []
    first = jobs_of(entries)[0]
    assert first.text == "只要不来中国的外国人就是好外国人[机智]"
    assert (first.item_id, first.line) == ("1", 2)


def test_davidson_matches_csv_module(settings: Settings, shared_data: Path) -> None:
    path = shared_data / "davidson_en_hate_offensive" / "labeled_data.csv"
    jobs = jobs_of(checked(settings, path, text_column="tweet"))

    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        expected: list[tuple[int, str]] = []
        start = reader.line_num + 1
        for row in reader:
            expected.append((start, row[6]))
            start = reader.line_num + 1

    assert len(jobs) == 24783
    assert [job.text for job in jobs] == [text for _line, text in expected]
    assert [job.line for job in jobs] == [line for line, _text in expected]
    assert sum(1 for job in jobs if "\n" in job.text) == 917


def test_davidson_id_column_by_empty_header_position(settings: Settings, shared_data: Path) -> None:
    path = shared_data / "davidson_en_hate_offensive" / "labeled_data.csv"
    jobs = jobs_of(checked(settings, path, text_column="tweet", id_column="1", header=True))
    assert jobs[0].item_id == "0"
    assert len(jobs) == 24783


def test_gbk_medical_falls_back_to_gb18030(settings: Settings, shared_data: Path) -> None:
    path = shared_data / MEDICAL_CSV
    raw = path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("gb2312")
    source = open_input(settings, path, text_column="ask")
    entries = checked(settings, path, text_column="ask")
    assert source.encoding == "gb18030"
    assert "not valid UTF-8" in source.notes()[0]
    assert len(jobs_of(entries)) == 7644
    assert jobs_of(entries)[0].text.startswith("我有高血压这两天女婿来的时候给我拿了些党参泡水喝")


def test_gbk_medical_duplicate_rows_keep_record_ids(settings: Settings, shared_data: Path) -> None:
    # The file repeats 378 rows. Ids are record numbers, so the repeats are distinct items;
    # only an id column taken from the data can make two rows collide.
    path = shared_data / MEDICAL_CSV
    jobs = jobs_of(checked(settings, path, text_column="ask"))
    assert len({job.item_id for job in jobs}) == 7644
    by_title = checked(settings, path, text_column="ask", id_column="title")
    duplicates = rejections_of(by_title)
    assert len(duplicates) == 378
    assert all(rejection.field == "id" for rejection in duplicates)


def test_gbk_with_named_encoding(settings: Settings, shared_data: Path) -> None:
    path = shared_data / MEDICAL_CSV
    source = open_input(settings, path, text_column="ask", encoding="gbk")
    assert source.encoding == "gbk"
    assert source.notes() == []
    assert len(jobs_of(checked(settings, path, text_column="ask", encoding="gbk"))) == 7644


def test_csl_tsv_without_header(settings: Settings, shared_data: Path) -> None:
    path = shared_data / "csl_zh_title_generation" / "ts_test.tsv"
    source = open_input(settings, path, text_column="2")
    jobs = jobs_of(checked(settings, path, text_column="2"))
    assert source.format == "tsv"
    assert len(jobs) == 1000
    assert jobs[0].line == 1
    assert jobs[0].text.startswith("双宫能团活性艳蓝GN和RN")
    assert any("without a header" in note for note in source.notes())


def test_tsv_keeps_quote_characters(settings: Settings, shared_data: Path) -> None:
    # TSV has no quoting: a field that starts with a quote keeps it.
    path = shared_data / "tatoeba_manythings_cmn_en" / "cmn_subset.tsv"
    jobs = jobs_of(checked(settings, path, "translate", text_column="1", target_lang="zh"))
    assert len(jobs) == 2030
    assert '"What should I do?" I said to myself.' in {job.text for job in jobs}


def test_openai_batch_detected(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    request = {
        "custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "max_completion_tokens": 40, "temperature": 0.2,
                 "seed": 7, "messages": [{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "给这篇文章起个标题"}]},
    }
    path.write_text(json.dumps(request, ensure_ascii=False) + "\n", encoding="utf-8")
    source = open_input(settings, path, "write")
    jobs = jobs_of(checked(settings, path, "write"))
    assert source.format == "openai"
    assert len(jobs) == 1
    assert jobs[0].item_id == "req-1"
    assert jobs[0].text == "给这篇文章起个标题"
    assert jobs[0].params == {
        "max_tokens": 40, "temperature": 0.2, "seed": 7,
        "messages": request["body"]["messages"],  # type: ignore[index]
    }


def test_openai_batch_rejects_other_endpoints(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    lines = [
        {"custom_id": "a", "url": "/v1/embeddings", "body": {"input": "x"}},
        {"custom_id": "b", "body": {"messages": [{"role": "user", "content": "hi"}]}},
        {"body": {"messages": [{"role": "user", "content": "hi"}]}},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    entries = checked(settings, path, "write", format="openai")
    assert [type(entry).__name__ for entry in entries] == ["Rejection", "JobRow", "Rejection"]
    assert entries[0].field == "url"  # type: ignore[union-attr]
    assert entries[2].field == "custom_id"  # type: ignore[union-attr]


def test_openai_format_needs_write(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text('{"custom_id": "a", "body": {"messages": []}}\n', encoding="utf-8")
    with pytest.raises(ProducerError, match="--kind write"):
        open_input(settings, path, "moderate")


# JSON Lines defects: each one names its line.

def test_jsonl_defects_name_lines(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "defects.jsonl"
    content = (
        b'{"text": "ok one"}\n'           # 1
        b"\n"                              # 2 blank: skipped
        b"[]\n"                            # 3 not an object
        b"42\n"                            # 4 not an object
        b'{"text": "bad \xff byte"}\n'     # 5 invalid UTF-8
        b'{"id": "x"}\n'                   # 6 no text
        b'{"text": 5}\n'                   # 7 text not a string
        b'{"text": "ok two"}\n'            # 8
        b'{"text": "trunc'                 # 9 truncated last line
    )
    path.write_bytes(content)
    entries = checked(settings, path)
    rejected = {entry.line: entry for entry in rejections_of(entries)}
    assert sorted(rejected) == [3, 4, 5, 6, 7, 9]
    assert [job.line for job in jobs_of(entries)] == [1, 8]
    assert "an array" in rejected[3].reason
    assert "the number 42" in rejected[4].reason
    bad_offset = content.index(b"\xff")
    assert f"byte offset {bad_offset}" in rejected[5].reason
    assert "0xff" in rejected[5].reason
    assert rejected[6].field == "text"
    assert rejected[6].item_id == "x"
    assert rejected[7].field == "text"
    assert "truncated" in rejected[9].reason


def test_jsonl_blank_lines_not_counted(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text('\n{"text": "a"}\n   \n{"text": "b"}\n\n', encoding="utf-8")
    jobs = jobs_of(checked(settings, path))
    assert [(job.item_id, job.line) for job in jobs] == [("1", 2), ("2", 4)]


def test_jsonl_utf16_bom(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "wide.jsonl"
    path.write_bytes(codecs.BOM_UTF16_LE + '{"text": "宽字符"}\n{"text": "b"}\n'.encode("utf-16-le"))
    jobs = jobs_of(checked(settings, path))
    assert [job.text for job in jobs] == ["宽字符", "b"]


def test_jsonl_gb18030_with_encoding_option(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "gbk.jsonl"
    path.write_bytes('{"text": "简体中文"}\n'.encode("gb18030"))
    assert rejections_of(checked(settings, path))[0].line == 1
    jobs = jobs_of(checked(settings, path, encoding="gb18030"))
    assert jobs[0].text == "简体中文"


def test_jsonl_overlong_line_skipped(settings: Settings, tmp_path: Path) -> None:
    small = settings.replace(max_text_chars=10)
    limit = 32 * 10 + (1 << 20)
    path = tmp_path / "long.jsonl"
    path.write_text('{"text": "' + "x" * (limit + 10) + '"}\n{"text": "short"}\n', encoding="utf-8")
    entries = checked(small, path)
    assert isinstance(entries[0], Rejection)
    assert "longer than" in entries[0].reason
    assert isinstance(entries[1], JobRow)
    assert entries[1].line == 2


# CSV details.

def test_csv_quoted_newlines_report_start_line(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    path.write_text('id,text\na,"one\ntwo\nthree"\nb,plain\nc,"bad"x\nd,last\n', encoding="utf-8")
    entries = checked(settings, path, id_column="id")
    assert [(e.line, type(e).__name__) for e in entries] == [
        (2, "JobRow"), (5, "JobRow"), (6, "Rejection"), (7, "JobRow"),
    ]
    assert entries[0].text == "one\ntwo\nthree"  # type: ignore[union-attr]
    assert "invalid CSV" in entries[2].reason  # type: ignore[union-attr]


def test_csv_unterminated_quote_at_end(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "open.csv"
    path.write_text('text\nfine\n"never closed\nmore\n', encoding="utf-8")
    entries = checked(settings, path)
    assert isinstance(entries[-1], Rejection)
    assert entries[-1].line == 3


def test_csv_short_row(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text("a,b,text\n1,2,three\n1,2\n", encoding="utf-8")
    entries = checked(settings, path)
    assert isinstance(entries[1], Rejection)
    assert entries[1].line == 3
    assert "3 columns" not in entries[1].reason
    assert "2 columns" in entries[1].reason


def test_csv_missing_text_column_lists_columns(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("title,body\nx,y\n", encoding="utf-8")
    with pytest.raises(ProducerError, match="'title', 'body'"):
        checked(settings, path)


def test_csv_text_column_case_insensitive(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("Title,Text\nx,y\n", encoding="utf-8")
    assert jobs_of(checked(settings, path))[0].text == "y"


def test_csv_id_column_by_default(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("ID,text\nq1,你好\nq2,world\n", encoding="utf-8")
    assert [job.item_id for job in jobs_of(checked(settings, path))] == ["q1", "q2"]


def test_csv_without_id_column_numbers_records(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "no-ids.csv"
    path.write_text("text,other\n你好,x\nworld,y\n", encoding="utf-8")
    assert [job.item_id for job in jobs_of(checked(settings, path))] == ["1", "2"]


def test_csv_column_number_beyond_row(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "narrow.csv"
    path.write_text("a,b,c\nd,e,f\n", encoding="utf-8")
    with pytest.raises(ProducerError, match="--text-column 9: the first row has only 3 columns"):
        checked(settings, path, text_column="9")


def test_csv_extra_columns_become_variables(settings: Settings, tmp_path: Path) -> None:
    templates = tmp_path / "templates.toml"
    templates.write_text('[templates.ad]\nversion = 1\ntext = "{brand}: {text}"\n', encoding="utf-8")
    with_templates = settings.replace(templates_file=templates)
    path = tmp_path / "ads.csv"
    path.write_text("brand,text,notes\nAcme,Rockets,ignored\n", encoding="utf-8")
    jobs = jobs_of(checked(with_templates, path, "write", template="ad"))
    assert jobs[0].params == {"variables": {"brand": "Acme"}}


def test_semicolon_delimiter(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "semi.txt"
    path.write_text("id;text\n7;hello\n", encoding="utf-8")
    jobs = jobs_of(checked(settings, path, format="csv", delimiter="semicolon", id_column="id"))
    assert (jobs[0].item_id, jobs[0].text) == ("7", "hello")


def test_undecodable_csv_names_offset(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(b"text\nabc\n\xff\xff\n")
    with pytest.raises(DecodeError) as raised:
        open_input(settings, path)
    message = str(raised.value)
    assert "byte offset 9" in message
    assert "--encoding" in message


def test_named_encoding_mismatch(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "utf8.csv"
    path.write_bytes("text\n中文\n".encode())
    with pytest.raises(DecodeError, match="byte offset"):
        open_input(settings, path, encoding="ascii")


def test_column_options_rejected_for_jsonl(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n', encoding="utf-8")
    with pytest.raises(ProducerError, match="CSV and TSV"):
        open_input(settings, path, text_column="text")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param("rows.jsonl", '{"text": "a"}\n', "jsonl", id="jsonl-suffix"),
        pytest.param("rows.ndjson", '{"text": "a"}\n', "jsonl", id="ndjson-suffix"),
        pytest.param("rows.txt", '{"text": "a"}\n', "jsonl", id="jsonl-content"),
        pytest.param("rows.txt", "text\tid\na\t1\n", "tsv", id="tsv-content"),
        pytest.param("rows.txt", "text,id\na,1\n", "csv", id="csv-content"),
        pytest.param("rows.csv", "text\n{not json}\n", "csv", id="csv-suffix"),
    ],
)
def test_format_auto(settings: Settings, tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert open_input(settings, path).format == expected


def test_records_can_be_read_twice(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n', encoding="utf-8")
    source = open_input(settings, path)
    first: list[Record] = list(source.records())
    second: list[Record] = list(source.records())
    assert first == second
