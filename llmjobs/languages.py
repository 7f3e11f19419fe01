"""Language codes: one canonical tag per language, with FLORES-200 codes and English names.

The canonical tag is the ISO 639-1 code ("en", "ja"), except where a script matters:
"zh" is Chinese in simplified characters and "zh-Hant" is Chinese in traditional characters.
`normalise_language` accepts ISO 639-1 and 639-2/3 codes, BCP-47 tags with a script or
region ("zh-CN", "zh-Hans", "zh_TW", "en-US") and FLORES-200 codes ("zho_Hans", "eng_Latn").
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """One supported language: canonical tag, FLORES-200 code, English name, other codes."""

    tag: str
    flores: str
    name: str
    # ISO 639-2/3 codes and other spellings that mean the same language.
    aliases: tuple[str, ...] = ()

    @property
    def script(self) -> str:
        return self.flores.split("_", 1)[1]


LANGUAGES: tuple[Language, ...] = (
    Language("zh", "zho_Hans", "Chinese (Simplified)", ("zho", "chi", "cmn")),
    Language("zh-Hant", "zho_Hant", "Chinese (Traditional)"),
    Language("yue", "yue_Hant", "Cantonese"),
    Language("en", "eng_Latn", "English", ("eng",)),
    Language("ja", "jpn_Jpan", "Japanese", ("jpn",)),
    Language("ko", "kor_Hang", "Korean", ("kor",)),
    Language("fr", "fra_Latn", "French", ("fra", "fre")),
    Language("de", "deu_Latn", "German", ("deu", "ger")),
    Language("es", "spa_Latn", "Spanish", ("spa",)),
    Language("pt", "por_Latn", "Portuguese", ("por",)),
    Language("it", "ita_Latn", "Italian", ("ita",)),
    Language("nl", "nld_Latn", "Dutch", ("nld", "dut")),
    Language("ru", "rus_Cyrl", "Russian", ("rus",)),
    Language("uk", "ukr_Cyrl", "Ukrainian", ("ukr",)),
    Language("pl", "pol_Latn", "Polish", ("pol",)),
    Language("cs", "ces_Latn", "Czech", ("ces", "cze")),
    Language("sk", "slk_Latn", "Slovak", ("slk", "slo")),
    Language("sl", "slv_Latn", "Slovenian", ("slv",)),
    Language("hr", "hrv_Latn", "Croatian", ("hrv",)),
    Language("sr", "srp_Cyrl", "Serbian", ("srp",)),
    Language("bg", "bul_Cyrl", "Bulgarian", ("bul",)),
    Language("ro", "ron_Latn", "Romanian", ("ron", "rum")),
    Language("hu", "hun_Latn", "Hungarian", ("hun",)),
    Language("el", "ell_Grek", "Greek", ("ell", "gre")),
    Language("tr", "tur_Latn", "Turkish", ("tur",)),
    Language("ar", "arb_Arab", "Arabic", ("ara", "arb")),
    Language("he", "heb_Hebr", "Hebrew", ("heb", "iw")),
    Language("fa", "pes_Arab", "Persian", ("fas", "per", "pes")),
    Language("ur", "urd_Arab", "Urdu", ("urd",)),
    Language("hi", "hin_Deva", "Hindi", ("hin",)),
    Language("bn", "ben_Beng", "Bengali", ("ben",)),
    Language("mr", "mar_Deva", "Marathi", ("mar",)),
    Language("gu", "guj_Gujr", "Gujarati", ("guj",)),
    Language("pa", "pan_Guru", "Punjabi", ("pan",)),
    Language("ta", "tam_Taml", "Tamil", ("tam",)),
    Language("te", "tel_Telu", "Telugu", ("tel",)),
    Language("kn", "kan_Knda", "Kannada", ("kan",)),
    Language("ml", "mal_Mlym", "Malayalam", ("mal",)),
    Language("vi", "vie_Latn", "Vietnamese", ("vie",)),
    Language("th", "tha_Thai", "Thai", ("tha",)),
    Language("id", "ind_Latn", "Indonesian", ("ind", "in")),
    Language("ms", "zsm_Latn", "Malay", ("msa", "may", "zsm")),
    Language("tl", "tgl_Latn", "Tagalog", ("tgl", "fil")),
    Language("my", "mya_Mymr", "Burmese", ("mya", "bur")),
    Language("km", "khm_Khmr", "Khmer", ("khm",)),
    Language("lo", "lao_Laoo", "Lao", ("lao",)),
    Language("mn", "khk_Cyrl", "Mongolian", ("mon", "khk")),
    Language("kk", "kaz_Cyrl", "Kazakh", ("kaz",)),
    Language("sv", "swe_Latn", "Swedish", ("swe",)),
    Language("da", "dan_Latn", "Danish", ("dan",)),
    Language("nb", "nob_Latn", "Norwegian Bokmål", ("nob", "no", "nor")),
    Language("fi", "fin_Latn", "Finnish", ("fin",)),
    Language("et", "est_Latn", "Estonian", ("est",)),
    Language("lv", "lvs_Latn", "Latvian", ("lav", "lvs")),
    Language("lt", "lit_Latn", "Lithuanian", ("lit",)),
    Language("ca", "cat_Latn", "Catalan", ("cat",)),
    Language("sw", "swh_Latn", "Swahili", ("swa", "swh")),
)

_BY_TAG = {language.tag.lower(): language for language in LANGUAGES}
_BY_FLORES = {language.flores.lower(): language for language in LANGUAGES}
_BY_ALIAS = {alias: language for language in LANGUAGES for alias in language.aliases}

# Chinese regions whose default script is traditional characters.
_TRADITIONAL_REGIONS = frozenset({"tw", "hk", "mo"})
_FLORES_PATTERN = re.compile(r"^[a-z]{3}_[a-z]{4}$")
_SCRIPT_PATTERN = re.compile(r"^[a-z]{4}$")
_REGION_PATTERN = re.compile(r"^(?:[a-z]{2}|[0-9]{3})$")


def normalise_language(code: str) -> str:
    """Return the canonical tag of a language code, or raise ValueError naming the code."""
    return _lookup(code).tag


def to_flores(code: str) -> str:
    """Return the FLORES-200 code (as NLLB checkpoints use) of any accepted language code."""
    return _lookup(code).flores


def language_name(code: str) -> str:
    """Return the English name of any accepted language code, e.g. "Chinese (Simplified)"."""
    return _lookup(code).name


def supported_languages() -> list[str]:
    """Return the canonical tags of every supported language."""
    return [language.tag for language in LANGUAGES]


def _lookup(code: str) -> Language:
    if not isinstance(code, str):
        raise ValueError(f"language code must be a string, got {code!r}")
    text = code.strip().lower()
    if _FLORES_PATTERN.match(text):
        found = _BY_FLORES.get(text)
        if found is None:
            raise ValueError(_unknown(code))
        return found

    subtags = text.replace("_", "-").split("-")
    primary, rest = subtags[0], subtags[1:]
    language = _BY_TAG.get(primary) or _BY_ALIAS.get(primary)
    if language is None:
        raise ValueError(_unknown(code))

    script: str | None = None
    region: str | None = None
    for subtag in rest:
        if script is None and region is None and _SCRIPT_PATTERN.match(subtag):
            script = subtag
        elif region is None and _REGION_PATTERN.match(subtag):
            region = subtag
        else:
            raise ValueError(_unknown(code))

    if language.tag == "zh":
        return _chinese(code, script, region)
    if script is not None and script != language.script.lower():
        raise ValueError(
            f"language code {code!r} asks for script {script.title()}, but only "
            f"{language.name} in {language.script} script is supported"
        )
    return language


def _chinese(code: str, script: str | None, region: str | None) -> Language:
    # An explicit script decides; otherwise the region's usual script does.
    if script == "hant" or (script is None and region in _TRADITIONAL_REGIONS):
        return _BY_TAG["zh-hant"]
    if script in (None, "hans"):
        return _BY_TAG["zh"]
    raise ValueError(
        f"language code {code!r} names script {script.title()}; Chinese is supported in "
        "Hans (zh) and Hant (zh-Hant) scripts only"
    )


def _unknown(code: str) -> str:
    return (
        f"unknown language code {code!r}; use ISO 639-1 (zh, en, ja), BCP-47 "
        "(zh-CN, zh-Hant, zh_TW, en-US) or FLORES-200 (zho_Hans, eng_Latn); "
        f"supported: {', '.join(supported_languages())}"
    )
