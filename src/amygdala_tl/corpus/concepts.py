"""The concept vocabulary: names, and the word forms a story must not use for its own concept.

Kept free of torch so `corpus check` and the corpus loader run instantly.
"""

from __future__ import annotations

import re

CONCEPTS: tuple[str, ...] = (
    # paired-scenario concepts
    "content",
    "cozy",
    "sensual",
    "in_flow",
    "anxious",
    "stuck",
    "calm",
    "onto_something",
    "determined",
    "piqued",
    "focused",
    "bored",
    "surprised",
    "amazed",
    "drifting",
    "furious",
    "bitter",
    "resentful",
    "defeated",
    "triumphant",
    "blissful",
    "excited",
    "proud",
    "grateful",
    "admiring",
    "compassionate",
    "loving",
    "connected",
    "afraid",
    "dread",
    "hopeful",
    "numb",
    # unpaired-only concepts
    "curious",
    "staying_with",
    "filling_space",
    "rigorous",
    "defensive_rigor",
    "tender",
    "witnessed",
    "trusting",
    "vulnerable",
    "joyful",
    "sad",
    "grieving",
    "lonely",
    "ashamed",
    "guilty",
    "embarrassed",
    "jealous",
    "disgusted",
    "contemptuous",
    "nostalgic",
    "serene",
    "playful",
    "irritated",
    "overwhelmed",
    "exhausted",
    "relieved",
    "confused",
    "skeptical",
)

# Forms the regular suffixes below do not reach (irregular nouns, verb stems).
EXTRA_FORMS: dict[str, tuple[str, ...]] = {
    "anxious": ("anxiety", "anxieties"),
    "proud": ("pride",),
    "furious": ("fury",),
    "curious": ("curiosity",),
    "grieving": ("grief", "grieve", "grieved", "grieves"),
    "ashamed": ("shame", "shamed", "shameful"),
    "guilty": ("guilt",),
    "embarrassed": ("embarrass", "embarrassment", "embarrassing"),
    "jealous": ("jealousy",),
    "disgusted": ("disgust", "disgusting"),
    "contemptuous": ("contempt",),
    "nostalgic": ("nostalgia",),
    "irritated": ("irritate", "irritation", "irritating"),
    "overwhelmed": ("overwhelm", "overwhelming"),
    "exhausted": ("exhaust", "exhaustion", "exhausting"),
    "relieved": ("relief", "relieve"),
    "confused": ("confuse", "confusion", "confusing"),
    "skeptical": ("skeptic", "skepticism", "sceptical", "sceptic"),
    "excited": ("excite", "excitement", "exciting"),
    "amazed": ("amaze", "amazement", "amazing"),
    "surprised": ("surprise", "surprising"),
    "bored": ("boredom", "boring", "bore"),
    "dread": ("dreaded", "dreading", "dreadful"),
    "hopeful": ("hope", "hoped", "hoping", "hopes"),
    "determined": ("determination", "determine"),
    "focused": ("focus", "focusing", "focussed"),
    "triumphant": ("triumph",),
    "blissful": ("bliss",),
    "grateful": ("gratitude",),
    "admiring": ("admire", "admiration", "admired"),
    "compassionate": ("compassion",),
    "loving": ("love", "loved", "loves"),
    "connected": ("connect", "connection"),
    "defeated": ("defeat",),
    "resentful": ("resent", "resentment", "resented"),
    "trusting": ("trust", "trusted"),
    "vulnerable": ("vulnerability",),
    "witnessed": ("witness",),
    "rigorous": ("rigor", "rigour"),
    "defensive_rigor": ("defensive", "rigor", "rigour", "rigorous"),
    "joyful": ("joy",),
    "serene": ("serenity",),
    "lonely": ("loneliness",),
    "cozy": ("cosy", "coziness"),
    "content": ("contentment", "contented"),
    "piqued": ("pique",),
    "drifting": ("drift", "drifted"),
    "in_flow": ("flow", "flowing", "flowed"),
    "sensual": ("sensuality",),
    "playful": ("play",),
    "stuck": ("unstuck",),
    "calm": ("calmly", "calmness", "calmed"),
}

_SUFFIXES = ("", "s", "ly", "ness", "ity")


def forbidden_pattern(concept: str) -> re.Pattern[str]:
    """Regex matching the concept's name (multi-word names as phrases) and its obvious forms."""
    words = concept.split("_")
    alternatives = ["[\\s_-]+".join(map(re.escape, words)) + f"(?:{'|'.join(_SUFFIXES)})"]
    alternatives += [re.escape(form) for form in EXTRA_FORMS.get(concept, ())]
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)


def names_own_concept(concept: str, text: str) -> str | None:
    """The first forbidden form of `concept` found in `text`, or None."""
    match = forbidden_pattern(concept).search(text)
    return match.group(0) if match else None


SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
