"""Text helpers every stage shares: one way to fold names, titles and addresses for
comparison, and one way to count the columns a string takes in a terminal or plain text."""

from __future__ import annotations

import re
import unicodedata

# letters that Unicode does not decompose into a base letter and a mark
_TRANSLIT = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D",
                           "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "æ": "ae", "Æ": "Ae",
                           "œ": "oe", "Œ": "Oe", "ß": "ss", "ı": "i", "ħ": "h", "Ħ": "H"})


def fold(text: str) -> str:
    """Lower-case and strip diacritics: "Jürgen" -> "jurgen", "Łukasz" -> "lukasz".

    The one normaliser for comparing names (author matching), titles (a paper's last-resort
    identity) and addresses (signed tokens)."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def display_width(text: str) -> int:
    """Display columns: Chinese, Japanese and Korean (wide and full-width) characters take
    two, everything else one."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


# TeX accent commands as arXiv's listings write names ("Pi\\v{z}urica", "Milovi\\'c")
_TEX_MARKS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303",
              "=": "\u0304", ".": "\u0307", "v": "\u030c", "u": "\u0306", "H": "\u030b",
              "c": "\u0327", "k": "\u0328", "r": "\u030a"}
_TEX_LETTERS = {"ss": "ß", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "aa": "å", "AA": "Å",
                "o": "ø", "O": "Ø", "l": "ł", "L": "Ł", "i": "ı", "j": "ȷ"}
_TEX_ACCENT = re.compile(r"\\(['`^\"~=.]|[vuHckr](?![A-Za-z]))\s*"
                         r"(?:\{\s*(\\?[A-Za-z])\s*\}|(\\?[A-Za-z]))")
_TEX_LETTER = re.compile(r"\{?\\(ss|ae|AE|oe|OE|aa|AA|o|O|l|L|i|j)(?![A-Za-z])\s*\}?")


def untex(text: str) -> str:
    """TeX accents and letters as Unicode: "Pi\\v{z}urica" -> "Pižurica", "{\\o}" -> "ø";
    text without a backslash is returned as it is."""
    if "\\" not in text:
        return text

    def accent(m: re.Match[str]) -> str:
        base = m.group(2) or m.group(3)
        base = _TEX_LETTERS.get(base[1:], base[1:]) if base.startswith("\\") else base
        return base + _TEX_MARKS[m.group(1)]

    out = _TEX_ACCENT.sub(accent, text)
    out = _TEX_LETTER.sub(lambda m: _TEX_LETTERS[m.group(1)], out)
    out = re.sub(r"\{([^{}\\]*)\}", r"\1", out)  # braces left around plain letters
    return unicodedata.normalize("NFC", out)
