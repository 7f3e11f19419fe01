"""Language codes: ISO 639-1, BCP-47 and FLORES-200 spellings map to one canonical tag."""

from __future__ import annotations

import pytest

from llmjobs.languages import language_name, normalise_language, supported_languages, to_flores


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param("zh", "zh", id="iso-zh"),
        pytest.param("zh-CN", "zh", id="bcp47-zh-cn"),
        pytest.param("zh-Hans", "zh", id="bcp47-hans"),
        pytest.param("zh-SG", "zh", id="bcp47-zh-sg"),
        pytest.param("zh_TW", "zh-Hant", id="underscore-tw"),
        pytest.param("zh-HK", "zh-Hant", id="bcp47-hk"),
        pytest.param("zh-Hant", "zh-Hant", id="bcp47-hant"),
        pytest.param("zh-Hant-TW", "zh-Hant", id="script-and-region"),
        pytest.param("zh-Hans-HK", "zh", id="script-beats-region"),
        pytest.param("zho_Hans", "zh", id="flores-hans"),
        pytest.param("zho_Hant", "zh-Hant", id="flores-hant"),
        pytest.param("cmn", "zh", id="iso639-3-cmn"),
        pytest.param("en", "en", id="iso-en"),
        pytest.param("EN-us", "en", id="case-insensitive"),
        pytest.param("eng_Latn", "en", id="flores-en"),
        pytest.param("eng", "en", id="iso639-2-en"),
        pytest.param(" ja ", "ja", id="whitespace"),
        pytest.param("pt-BR", "pt", id="region-dropped"),
        pytest.param("sr-Cyrl", "sr", id="matching-script"),
        pytest.param("no", "nb", id="norwegian-alias"),
        pytest.param("fil", "tl", id="filipino-alias"),
    ],
)
def test_normalise_language(code: str, expected: str) -> None:
    assert normalise_language(code) == expected


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("xx", id="unknown-iso"),
        pytest.param("", id="empty"),
        pytest.param("zh-Latn", id="chinese-latin-script"),
        pytest.param("en-Cyrl", id="wrong-script"),
        pytest.param("xyz_Latn", id="unknown-flores"),
        pytest.param("en-US-extra-stuff", id="too-many-subtags"),
        pytest.param("zh-TW-Hant", id="region-before-script"),
    ],
)
def test_normalise_language_rejects(code: str) -> None:
    with pytest.raises(ValueError) as raised:
        normalise_language(code)
    assert repr(code) in str(raised.value)


def test_unknown_code_names_accepted_forms() -> None:
    with pytest.raises(ValueError) as raised:
        normalise_language("klingon")
    message = str(raised.value)
    assert "'klingon'" in message
    assert "ISO 639-1" in message
    assert "BCP-47" in message
    assert "FLORES-200" in message


@pytest.mark.parametrize(
    ("code", "flores"),
    [("zh", "zho_Hans"), ("zh-Hant", "zho_Hant"), ("zh-TW", "zho_Hant"), ("en", "eng_Latn"),
     ("ja", "jpn_Jpan"), ("ar", "arb_Arab"), ("eng_Latn", "eng_Latn")],
)
def test_to_flores(code: str, flores: str) -> None:
    assert to_flores(code) == flores


def test_language_name() -> None:
    assert language_name("zh") == "Chinese (Simplified)"
    assert language_name("zh-TW") == "Chinese (Traditional)"
    assert language_name("en-US") == "English"


def test_required_languages_supported() -> None:
    required = ["zh", "zh-Hant", "en", "ja", "ko", "fr", "de", "es", "pt", "ru", "ar", "hi",
                "vi", "th", "id", "it", "tr", "nl", "pl", "uk"]
    tags = supported_languages()
    for tag in required:
        assert tag in tags
    assert len(tags) >= 40


def test_every_language_round_trips() -> None:
    for tag in supported_languages():
        assert normalise_language(tag) == tag
        assert normalise_language(to_flores(tag)) == tag
