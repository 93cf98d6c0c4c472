"""Is an answer right? Normalised key-fact matching, the rule every QA accuracy here uses.

An answer is correct when the words of at least one of the row's key facts
appear in it, in order and as whole words, after both sides are normalised:
case and punctuation dropped, number words turned into digits ("two" -> "2"),
thousands separators removed ("60,000" -> "60000"), ranges and ratios written
one way ("15-20" and "between 15 and 20" -> "15 to 20", "15 to 1" -> "15:1"),
common unit names shortened ("millimetres" -> "mm", "%" -> "percent") and
British/American spellings merged ("tire" -> "tyre"). Numbers match whole:
"80" is not found in "180" or "80,000". A key-fact word of three or more
letters also matches a longer word that begins with it, so inflections count
("freeze" is in "freezes") and a key fact may be written as a stem
("lubricat" is in "lubricates", "lubrication"); shorter words ("a", "nm")
match whole.
"""

from __future__ import annotations

import re
import unicodedata

_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i > 1}
_SAME_WORD = {
    "tire": "tyre", "tires": "tyres", "liter": "litre", "liters": "litres", "meter": "metre", "meters": "metres",
    "center": "centre", "curb": "kerb", "sulfur": "sulphur", "millimetre": "mm", "millimetres": "mm",
    "millimeter": "mm", "millimeters": "mm", "kilometre": "km", "kilometres": "km", "kilometer": "km",
    "kilometers": "km", "kilowatt": "kw", "kilowatts": "kw", "volt": "v", "volts": "v", "milliamp": "ma",
    "milliamps": "ma", "kilogram": "kg", "kilograms": "kg", "kilos": "kg", "centimetres": "cm",
    "centimetre": "cm", "centimeters": "cm", "centimeter": "cm", "degree": "degrees",
}
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[a-z]+|[:/]")


def normalize(text: str) -> list[str]:
    """The comparable word list of `text` (see the module docstring for every rule)."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)  # every dash and the minus sign
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 60,000 -> 60000
    text = text.replace("%", " percent ").replace("per cent", "percent")
    text = re.sub(r"(\d)\s*-\s*(\d)", r"\1 to \2", text)  # 15-20 -> 15 to 20
    text = re.sub(r"(?<![\w.])-(\d)", r"minus \1", text)  # -35 -> minus 35
    words = _numbers_to_digits([_SAME_WORD.get(t, t) for t in _TOKEN.findall(text)])
    return _canonical_ranges(words)


def _numbers_to_digits(words: list[str]) -> list[str]:
    out: list[str] = []
    for word in words:
        if word in _NUMBER_WORDS and out and out[-1] in {str(v) for v in _TENS.values()} and \
                0 < _NUMBER_WORDS[word] < 10:
            out[-1] = str(int(out[-1]) + _NUMBER_WORDS[word])  # twenty five -> 25
        elif word in _NUMBER_WORDS:
            out.append(str(_NUMBER_WORDS[word]))
        elif word in _TENS:
            out.append(str(_TENS[word]))
        else:
            out.append(word)
    return out


def _canonical_ranges(words: list[str]) -> list[str]:
    """'between A and B' -> 'A to B'; 'A to 1' -> 'A : 1' (a ratio)."""
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w == "between" and i + 3 < len(words) and _is_number(words[i + 1]) and words[i + 2] == "and" \
                and _is_number(words[i + 3]):
            out += [words[i + 1], "to", words[i + 3]]
            i += 4
            continue
        if w == "to" and out and _is_number(out[-1]) and i + 1 < len(words) and words[i + 1] == "1":
            out += [":", "1"]
            i += 2
            continue
        out.append(w)
        i += 1
    return out


def _is_number(word: str) -> bool:
    return bool(re.fullmatch(r"\d+(?:\.\d+)?", word))


MIN_STEM_LETTERS = 3


def _word_matches(word: str, fact_word: str) -> bool:
    return word == fact_word or (len(fact_word) >= MIN_STEM_LETTERS and fact_word.isalpha()
                                 and word.startswith(fact_word))


def contains(haystack: str, needle: str) -> bool:
    """Whether `needle`'s normalised words appear, in order and adjacent, in `haystack`'s (a fact
    word may be the start of a longer word: see the module docstring)."""
    words, part = normalize(haystack), normalize(needle)
    if not part:
        return False
    return any(all(_word_matches(w, f) for w, f in zip(words[i:i + len(part)], part))
               for i in range(len(words) - len(part) + 1))


def is_correct(answer: str, key_facts: list[str]) -> bool:
    """Correct when at least one key fact is in the answer (normalised, as `contains` matches)."""
    return any(contains(answer, fact) for fact in key_facts if fact)
