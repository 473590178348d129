"""Text helpers every stage shares: one way to fold names, titles and addresses for
comparison, and one way to count the columns a string takes in a terminal or plain text."""

from __future__ import annotations

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
