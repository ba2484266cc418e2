"""Text cleaning at prepare time: the paper's rule, lighter modes for cased tokenizers, and a social-media mode.

``social`` first repairs what social-media exports carry (HTML entities, runs of mis-decoded bytes, URLs,
@mentions, retweet markers), then applies the paper's rule. URLs and mentions become placeholder words that
survive the paper's rule, so a model still sees that a link or a user was there. ``clean_social`` also counts
what it changed, per text, for the dataset card.
"""

from __future__ import annotations

import html
import re
import unicodedata

CLEANINGS = {
    "paper": "lowercase, drop apostrophes, punctuation to spaces (the paper's, for an uncased BERT)",
    "lowercase": "lowercase only; punctuation kept",
    "none": "text as written (runs of whitespace collapsed)",
    "social": "HTML entities decoded, mis-decoded byte runs removed, URLs -> 'httpurl', @mentions -> 'atuser', "
    "RT markers dropped, then the paper's rule",
}

URL_PLACEHOLDER = "httpurl"
MENTION_PLACEHOLDER = "atuser"
SOCIAL_CHANGES = ("html_entities", "misdecoded_bytes", "urls", "mentions", "retweet_markers")

_APOSTROPHES = re.compile(r"['’`]")
_NON_WORD = re.compile(r"(?:[^\w\s]|_)+")  # runs of punctuation, symbols, '_' and combining marks
_SPACES = re.compile(r"\s+")

_HTML_ENTITY = re.compile(r"&(?:#\d+|#[xX][0-9a-fA-F]+|[A-Za-z]+\d*);")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@\w+")
_RETWEET = re.compile(r"(?<![\w@#])RT\b:?")  # the uppercase marker only: lowercase 'rt' is also "right"
_NON_ASCII_RUN = re.compile(
    r"(?:[^\x00-\x7f]|_)+"
)  # non-ASCII characters and the '_' that exports wrap them in


def _cp1252_char(byte: int) -> str:
    """The character a Windows-1252 decoder shows for ``byte`` (Latin-1's for the five bytes it leaves undefined)."""
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(byte)


def _char_class(first: int, last: int) -> str:
    return "[" + "".join(re.escape(_cp1252_char(byte)) for byte in range(first, last + 1)) + "]"


# UTF-8 text decoded as Windows-1252 ('â€™' for '’', 'Ã©' for 'é'): a lead byte's character followed by as
# many continuation bytes' characters as that lead byte announces
_CONTINUATION = _char_class(0x80, 0xBF)
_CP1252_MOJIBAKE = re.compile(
    f"{_char_class(0xC2, 0xDF)}{_CONTINUATION}"
    f"|{_char_class(0xE0, 0xEF)}{_CONTINUATION}{{2}}"
    f"|{_char_class(0xF0, 0xF4)}{_CONTINUATION}{{3}}"
)


def clean_text(text: str, cleaning: str = "paper") -> str:
    """Clean one text the way ``cleaning`` (a key of ``CLEANINGS``) says; every mode collapses whitespace.

    ``paper``: lowercase, drop apostrophes, turn punctuation and special characters into spaces.
    ``lowercase``: lowercase only. ``none``: keep case and punctuation (for cased tokenizers).
    ``social``: see ``clean_social``."""
    if cleaning not in CLEANINGS:
        raise ValueError(f"cleaning must be one of {sorted(CLEANINGS)}, got {cleaning!r}")
    text = str(text)
    if cleaning == "social":
        return clean_social(text)[0]
    if cleaning == "paper":
        text = _paper_words(text)
    elif cleaning == "lowercase":
        text = text.lower()
    return _SPACES.sub(" ", text).strip()


def _paper_words(text: str) -> str:
    text = _APOSTROPHES.sub("", text.lower())
    return _NON_WORD.sub(lambda run: _word_marks(run, text), text)


def _word_marks(run: re.Match, text: str) -> str:
    """What replaces a ``_NON_WORD`` run: a space, except that the combining marks (vowel signs, viramas,
    accents of decomposed text) opening a run right after a letter or digit stay, as part of that word (\\w
    does not match them: without this, Devanagari, Tamil or vowelled Arabic fall apart into consonants)."""
    chars = run.group()
    n_marks = 0
    if run.start() > 0 and text[run.start() - 1].isalnum():
        while n_marks < len(chars) and unicodedata.category(chars[n_marks]).startswith("M"):
            n_marks += 1
    return chars[:n_marks] + (" " if n_marks < len(chars) else "")


def clean_social(text: str) -> tuple[str, dict[str, int]]:
    """Social-media text cleaned, and what changed: ``{change: count}`` over ``SOCIAL_CHANGES``.

    In order: HTML entities decoded (``&amp;`` -> ``&``; counted 1 per text that had any); mis-decoded byte
    runs removed (counted 1 per text that had any, see ``remove_misdecoded``); URLs -> ``httpurl`` and
    @mentions -> ``atuser`` (counted each); standalone uppercase ``RT`` markers (and a colon after one)
    dropped (counted each); then the paper's rule, which keeps both placeholders as words."""
    changes = dict.fromkeys(SOCIAL_CHANGES, 0)
    unescaped = html.unescape(text) if _HTML_ENTITY.search(text) else text
    changes["html_entities"] = int(unescaped != text)
    repaired = remove_misdecoded(unescaped)
    changes["misdecoded_bytes"] = int(repaired != unescaped)
    text, changes["urls"] = _URL.subn(f" {URL_PLACEHOLDER} ", repaired)
    text, changes["mentions"] = _MENTION.subn(f" {MENTION_PLACEHOLDER} ", text)
    text, changes["retweet_markers"] = _RETWEET.subn(" ", text)
    return _SPACES.sub(" ", _paper_words(text)).strip(), changes


def remove_misdecoded(text: str) -> str:
    """``text`` without the traces of a wrong decoding: UTF-8 read as Windows-1252 (``â€™``, ``Ã©``), and
    runs of non-ASCII characters and underscores that hold a U+FFFD replacement character or join an
    underscore to a non-ASCII character (``_�_``, ``_ѝ``: how some tweet exports wrote bytes they could not
    decode). Removed, not replaced by a space: such runs mostly stood for an apostrophe or a quote mark.
    Made for English text: a genuine accented letter glued to '_' or to a symbol such as '’' goes too."""
    text = _CP1252_MOJIBAKE.sub("", text)
    return _NON_ASCII_RUN.sub(_drop_if_misdecoded, text)


def _drop_if_misdecoded(run: re.Match) -> str:
    chars = run.group()
    has_non_ascii = any(char != "_" for char in chars)
    if "\ufffd" in chars or ("_" in chars and has_non_ascii):
        return ""
    return chars
