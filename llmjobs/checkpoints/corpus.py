"""Generated mixed Chinese and English text for training the tiny checkpoints' tokenizer.

The lines come from word lists and sentence patterns with a fixed seed, so the tokenizer,
and with it every tiny checkpoint, is the same on every machine.
"""

from __future__ import annotations

import random

_EN_SUBJECTS = (
    "The new phone", "Our team", "This city", "The river", "My neighbour", "The old library",
    "A small company", "The weather", "Every student", "The government", "Her brother",
    "The train to Shanghai", "This recipe", "The football club", "Most users", "The museum",
)
_EN_VERBS = (
    "opened", "announced", "changed", "delivered", "rejected", "celebrated", "improved",
    "explained", "reported", "cancelled", "launched", "visited", "discussed", "fixed",
)
_EN_OBJECTS = (
    "a new product", "the annual report", "several problems", "the final match",
    "a long article about history", "the holiday schedule", "cheap flights to Beijing",
    "the price of rice", "an online course", "the community garden", "three new shops",
    "a complaint about the noise", "the translation of the manual", "this stupid idea",
)
_EN_ENDINGS = (
    "yesterday", "last week", "this morning", "after a long delay", "without warning",
    "for the first time", "in the city centre", "on social media", "before the meeting",
)
_ZH_SUBJECTS = (
    "新手机", "我们团队", "这座城市", "那条河", "我的邻居", "老图书馆", "一家小公司", "天气",
    "每个学生", "政府", "她的哥哥", "去上海的火车", "这个菜谱", "足球俱乐部", "大多数用户", "博物馆",
)
_ZH_VERBS = (
    "推出了", "宣布了", "改变了", "交付了", "拒绝了", "庆祝了", "改进了", "解释了", "报道了",
    "取消了", "发布了", "参观了", "讨论了", "修复了",
)
_ZH_OBJECTS = (
    "一款新产品", "年度报告", "几个问题", "决赛", "一篇关于历史的长文章", "假期安排",
    "去北京的便宜机票", "大米的价格", "一门网课", "社区花园", "三家新店", "关于噪音的投诉",
    "说明书的翻译", "这个愚蠢的主意",
)
_ZH_ENDINGS = (
    "昨天", "上周", "今天早上", "在长时间延误之后", "毫无预兆地", "第一次", "在市中心",
    "在社交媒体上", "在会议之前",
)
_FIXED_LINES = (
    "你好，世界！Hello, world!",
    "请把这段话翻译成英文：今天的会议推迟到下午三点。",
    "Please translate into Chinese: the meeting is moved to 3 pm.",
    "這個問題我們下週再討論。繁體中文也要支持。",
    "价格：¥299，折扣 20%，限时三天！",
    "Email me at test@example.com or call +86 21 5555 0000.",
    "😀 😂 👍 🎉 ❤️ 🇨🇳 🇬🇧 👩‍💻 很好用！",
    "你这个人真是太过分了，滚出去！",
    "You are an idiot and everyone hates you.",
    "我觉得这部电影还不错，就是有点长。",
    "Headline: Local team wins the championship after twenty years.",
    "标题：本地球队时隔二十年再夺冠军",
    "Summary: the report describes sales, costs and plans for next year.",
    "日本語の文も少し入れます。これはテストです。",
    "한국어 문장도 조금 넣습니다.",
    "Le chat dort sur le canapé. Der Hund spielt im Garten.",
)


def training_lines(count: int = 600, seed: int = 20240601) -> list[str]:
    """Return count lines of English, Chinese and mixed text, the same for the same seed."""
    rng = random.Random(seed)
    lines = list(_FIXED_LINES)
    while len(lines) < count:
        style = rng.randrange(4)
        english = (
            f"{rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)} "
            f"{rng.choice(_EN_ENDINGS)}{rng.choice('.!?')}"
        )
        chinese = (
            f"{rng.choice(_ZH_SUBJECTS)}{rng.choice(_ZH_ENDINGS)}{rng.choice(_ZH_VERBS)}"
            f"{rng.choice(_ZH_OBJECTS)}{rng.choice('。！？；')}"
        )
        if style == 0:
            lines.append(english)
        elif style == 1:
            lines.append(chinese)
        elif style == 2:
            lines.append(f"{chinese}{english}")
        else:
            number = rng.randrange(1, 10_000)
            lines.append(f"{chinese[:-1]}，共 {number} 人。{english} ({number} people)")
    return lines
