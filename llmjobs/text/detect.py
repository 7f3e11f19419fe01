"""Language detection with langid, restricted to likely languages, plus a Chinese script check.

langid returns ISO 639-1 codes. Scripts decide first where they are unambiguous (kana is
Japanese, hangul is Korean). Chinese text is classed as Simplified ("zh") or Traditional
("zh-Hant") by counting characters that exist in only one of the two scripts.
"""

from __future__ import annotations

import functools
import re
from typing import Any

# Languages that langid may return. An unrestricted langid (97 languages) often labels short
# lines as a rare language, so the set is limited to languages that bulk jobs commonly contain.
DEFAULT_LANGUAGES = (
    "ar", "de", "en", "es", "fr", "hi", "id", "it", "ja", "ko", "ms", "nl", "pl", "pt",
    "ru", "th", "tr", "uk", "vi", "zh",
)

# Pairs of (Traditional, Simplified) forms of frequent characters that differ between scripts.
_TRADITIONAL = (
    "這個們說國會來時為學後對發開關與經長門問應實點處體頭動還見書車東業區歲電話網過進現種題愛號"
    "樂隊氣語讓務條義記傳專總辦幾軍節變風龍貓馬鳥魚寫聽錢買賣價員黨習聯織組絕紅級線練結給統續"
    "適邊運達遠選隨陽陰雜雙難類顯質連樹勞華萬葉藝裡"
)
_SIMPLIFIED = (
    "这个们说国会来时为学后对发开关与经长门问应实点处体头动还见书车东业区岁电话网过进现种题爱号"
    "乐队气语让务条义记传专总办几军节变风龙猫马鸟鱼写听钱买卖价员党习联织组绝红级线练结给统续"
    "适边运达远选随阳阴杂双难类显质连树劳华万叶艺里"
)
_TRADITIONAL_ONLY = frozenset(_TRADITIONAL) - frozenset(_SIMPLIFIED)
_SIMPLIFIED_ONLY = frozenset(_SIMPLIFIED) - frozenset(_TRADITIONAL)

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


def detect_language(text: str, languages: tuple[str, ...] = DEFAULT_LANGUAGES) -> str:
    """Return the most likely language of text as a tag such as "en", "zh", "zh-Hant" or "ja".

    Raises ValueError when text has no letters to go by (only digits, punctuation or emoji).
    """
    if not any(char.isalpha() for char in text):
        raise ValueError("text has no letters, so its language cannot be detected")
    script_language = _language_from_script(text)
    if script_language is not None:
        return script_language
    code, _ = _identifier(tuple(sorted(languages))).classify(text)
    if code == "zh":
        return chinese_script(text)
    return str(code)


def chinese_script(text: str) -> str:
    """Return "zh-Hant" when text uses more Traditional-only than Simplified-only characters, else "zh"."""
    traditional = sum(char in _TRADITIONAL_ONLY for char in text)
    simplified = sum(char in _SIMPLIFIED_ONLY for char in text)
    return "zh-Hant" if traditional > simplified else "zh"


def _language_from_script(text: str) -> str | None:
    letters = sum(char.isalpha() for char in text)
    if _KANA.search(text):
        return "ja"
    hangul = len(_HANGUL.findall(text))
    if hangul * 2 >= letters:
        return "ko"
    han = len(_HAN.findall(text))
    # Mostly Han characters means Chinese, even when a few Latin words would sway langid.
    if han * 2 >= letters:
        return chinese_script(text)
    return None


@functools.lru_cache(maxsize=8)
def _identifier(languages: tuple[str, ...]) -> Any:
    # Imported and built on first use: decoding langid's model takes about a second.
    from langid.langid import LanguageIdentifier, model

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    identifier.set_languages(list(languages))
    return identifier
