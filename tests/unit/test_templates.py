"""Write templates: built-in versions, user TOML files, safe rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmjobs.errors import ConfigError, ProducerError, UnknownTemplate
from llmjobs.templates import Template, built_in_templates, get_template


def test_builtin_names_in_both_languages() -> None:
    for name in ("summary", "headline", "product_description"):
        assert get_template(name, "zh").language == "zh"
        assert get_template(name, "en").language == "en"
        assert get_template(name).language == "en"


def test_every_builtin_uses_text() -> None:
    for template in built_in_templates():
        assert "text" in template.fields


def test_version_reference() -> None:
    template = get_template("headline@1", "zh-CN")
    assert template.ref == "headline@1"
    assert template.language == "zh"


def test_unknown_template_lists_known() -> None:
    with pytest.raises(UnknownTemplate) as raised:
        get_template("haedline")
    assert "'haedline'" in str(raised.value)
    assert "headline" in str(raised.value)
    assert isinstance(raised.value, ProducerError)


def test_unknown_version() -> None:
    with pytest.raises(UnknownTemplate, match="no version 9"):
        get_template("headline@9")


def test_missing_language_variant() -> None:
    with pytest.raises(UnknownTemplate, match="'ja'"):
        get_template("headline", "ja")


def test_render_fills_fields() -> None:
    template = Template("t", 1, "en", "Title: {title}\n{text}", "")
    assert template.fields == ("title", "text")
    assert template.render({"title": "标题", "text": "body {x}"}) == "Title: 标题\nbody {x}"


def test_render_names_missing_field() -> None:
    template = Template("t", 1, "en", "{title}: {text}", "")
    with pytest.raises(ValueError, match="'title'"):
        template.render({"text": "x"})


def test_optional_field_renders_empty() -> None:
    template = get_template("product_description", "en")
    assert template.required_fields == ("text",)
    rendered = template.render({"text": "Blue Spice, coffee shop"})
    assert "Blue Spice, coffee shop" in rendered
    assert "{attributes}" not in rendered


def test_escaped_braces_stay_literal() -> None:
    template = Template("t", 1, "en", "{{json}} {text}", "")
    assert template.fields == ("text",)
    assert template.render({"text": "x"}) == "{json} x"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{text.__class__}", id="attribute"),
        pytest.param("{text[0]}", id="index"),
        pytest.param("{0}", id="positional-number"),
        pytest.param("{}", id="positional-empty"),
        pytest.param("{text!r}", id="conversion"),
        pytest.param("{text:>10}", id="format-spec"),
        pytest.param("{text", id="unclosed"),
    ],
)
def test_unsafe_placeholders_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        Template("t", 1, "en", text, "")


def test_user_templates_file(tmp_path: Path) -> None:
    path = tmp_path / "templates.toml"
    path.write_text(
        '[templates.tagline]\nversion = 1\nlanguage = "zh"\ntext = "为{product}写标语：{text}"\n'
        'description = "标语"\n\n'
        '[[templates.digest]]\nversion = 1\ntext = "Digest v1: {text}"\n\n'
        '[[templates.digest]]\nversion = 2\ntext = "Digest v2: {text}"\n',
        encoding="utf-8",
    )
    tagline = get_template("tagline", "zh", path)
    assert tagline.fields == ("product", "text")
    assert get_template("digest", templates_file=path).version == 2
    assert get_template("digest@1", templates_file=path).text == "Digest v1: {text}"
    assert get_template("headline", templates_file=path).name == "headline"


def test_user_template_cannot_replace_builtin(tmp_path: Path) -> None:
    path = tmp_path / "templates.toml"
    path.write_text('[templates.headline]\nversion = 1\ntext = "{text}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="headline@1"):
        get_template("headline", templates_file=path)


def test_user_template_with_unsafe_field(tmp_path: Path) -> None:
    path = tmp_path / "templates.toml"
    path.write_text('[templates.bad]\nversion = 1\ntext = "{text.upper}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="plain names"):
        get_template("bad", templates_file=path)


def test_missing_templates_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        get_template("headline", templates_file=tmp_path / "absent.toml")
