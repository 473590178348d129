"""The one normaliser and the one display-width helper, and what depends on them staying
as they were: tokens already mailed out, title keys already stored."""

from datetime import UTC, datetime

from newsletter.lists.tokens import confirm_token, unsubscribe_token
from newsletter.models import Paper
from newsletter.store.papers import title_key
from newsletter.text import display_width, fold


def test_fold_lowers_and_strips_diacritics():
    assert fold("Jürgen") == "jurgen"
    assert fold("Łukasz Kaiser") == "lukasz kaiser"
    assert fold("Søren Kierkegaard") == "soren kierkegaard"
    assert fold("STRASSE") == fold("Straße") == "strasse"
    assert fold("ada@example.org") == "ada@example.org"


def test_display_width_counts_wide_characters_twice():
    assert display_width("ada") == 3
    assert display_width("蛋白质") == 6
    assert display_width("AI 与蛋白质") == 11
    assert display_width("Jürgen") == 6  # a combining-free accented letter is one column


def test_tokens_are_the_ones_already_mailed():
    # values computed with the code before the normalisers were merged: links and
    # confirmation mails already sent must keep working
    assert confirm_token("s3cret", " Ada.Lovelace@Example.org ") == \
        "a5833516b5cc2cbd3121df4fdd9847fc"
    assert confirm_token("s3cret", "ada@example.org") == "f304c6f18838491142a150c20308f4c8"
    assert unsubscribe_token("s3cret", "Ada@example.org") == "31b916702ab9dcc7a6b6df4fab0f2fa7"


def test_title_key_folds_title_and_first_family_name():
    paper = Paper("x", "s", "Protein Folding — Ünïcode: a study!", ("Jürgen Schmidhuber",),
                  "", "https://example.org", datetime(2026, 1, 1, tzinfo=UTC))
    assert title_key(paper) == "protein folding unicode a study|schmidhuber"
