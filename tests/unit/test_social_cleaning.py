"""The social cleaning: planted URLs, mentions, RT markers, HTML entities and mis-decoded bytes are each
replaced, dropped or removed, counted per text and on the dataset card; genuine text is left to the paper's rule."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from layershift.data.cleaning import (
    MENTION_PLACEHOLDER,
    SOCIAL_CHANGES,
    URL_PLACEHOLDER,
    clean_social,
    clean_text,
    remove_misdecoded,
)
from layershift.data.prepare import PrepareConfig, prepare_dataset


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("RT @bob: Loving it http://t.co/abc &amp; more", "atuser loving it httpurl more"),
        ("see www.example.com/a?b=1, then HTTPS://X.CO/Y!", "see httpurl then httpurl"),
        ("@united @SouthwestAir worst.", "atuser atuser worst"),
        ("mail me@example.com", "mail me example com"),  # an address is no mention
        ("ART and RTs and rt now", "art and rts and rt now"),  # only a standalone uppercase RT is a marker
        ("MT RT: RT @a: hi", "mt atuser hi"),
        ("Google\ufffd_\ufffds car_\ufffd_.no thanks", "googles car no thanks"),
        ("I don_\ufffd\ufffd\u0562t know", "i dont know"),  # U+0562: a byte pair that decoded by accident
        ("http://t.co/W5yAxdjoVz_\u045d #wow", "httpurl wow"),  # '_ѝ': a closing quote's remains
        ("donâ€™t stop â€œnowâ€\x9d", "dont stop now"),  # UTF-8 read as Windows-1252
        ("Café naïve, snake_case 你好", "café naïve snake case 你好"),  # genuine text: the paper's rule
        ("&lt;3 &#39;quoted&#39; &quot;x&quot;", "3 quoted x"),
        ("\ufffd\ufffd", ""),
    ],
)
def test_social_cleaning(raw, clean):
    assert clean_text(raw, "social") == clean


def test_placeholders_survive_the_papers_rule_as_words():
    assert URL_PLACEHOLDER.isalnum() and URL_PLACEHOLDER.islower()
    assert MENTION_PLACEHOLDER.isalnum() and MENTION_PLACEHOLDER.islower()
    assert clean_text(URL_PLACEHOLDER, "paper") == URL_PLACEHOLDER
    assert clean_text(f"{MENTION_PLACEHOLDER}!", "social") == MENTION_PLACEHOLDER


def test_each_change_is_counted_per_text():
    text, changes = clean_social("RT @a: RT @b: x http://u.co/1 y https://u.co/2 &amp; don\ufffd_t")
    assert text == "atuser atuser x httpurl y httpurl dont"
    assert changes == {
        "html_entities": 1,
        "misdecoded_bytes": 1,
        "urls": 2,
        "mentions": 2,
        "retweet_markers": 2,
    }
    assert clean_social("plain text")[1] == dict.fromkeys(SOCIAL_CHANGES, 0)


def test_genuine_non_ascii_text_is_not_taken_for_mis_decoded_bytes():
    for text in ("naïve café", "Ωmega", "日本語のテキスト", "emoji 😀 here", "snake_case", "Ça va"):
        assert remove_misdecoded(text) == text


def planted_tweets() -> tuple[pd.DataFrame, dict]:
    """30 distinct tweets over three labels with a known number of each change."""
    rows, totals = [], dict.fromkeys(("urls", "mentions", "retweet_markers", "html", "misdecoded"), 0)
    for i in range(30):
        parts = [f"tweet number {i} about {['rain', 'sun', 'snow'][i % 3]}"]
        if i % 2 == 0:
            parts.append(f"http://t.co/{i}")
            totals["urls"] += 1
        if i % 3 == 0:
            parts.insert(0, f"RT @user{i}:")
            totals["retweet_markers"] += 1
            totals["mentions"] += 1
        if i % 5 == 0:
            parts.append("&amp; more")
            totals["html"] += 1
        if i % 7 == 0:
            parts.append("it\ufffd_\ufffds")
            totals["misdecoded"] += 1
        rows.append({"text": " ".join(parts), "label": ["neg", "neutral", "pos"][i % 3]})
    return pd.DataFrame(rows), totals


def test_card_counts_what_the_social_cleaning_changed(tmp_path):
    frame, totals = planted_tweets()
    frame.to_csv(tmp_path / "tweets.csv", index=False)
    cfg = PrepareConfig(cleaning="social")
    card = prepare_dataset(str(tmp_path / "tweets.csv"), "text", "label", tmp_path / "out", cfg, "tweets")
    assert card["rows_kept"] == 30
    assert card["cleaning_changes"] == {
        "urls_replaced": totals["urls"],
        "mentions_replaced": totals["mentions"],
        "retweet_markers_dropped": totals["retweet_markers"],
        "rows_with_html_entities_decoded": totals["html"],
        "rows_with_misdecoded_bytes_fixed": totals["misdecoded"],
    }
    assert (
        json.loads((tmp_path / "out" / "card.json").read_text())["cleaning_changes"]
        == card["cleaning_changes"]
    )
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    assert list(train.columns) == ["row", "text", "label", "label_name"]  # the counts stay off the splits
    assert not train["text"].str.contains("http:|@|&|\ufffd|_").any()


def test_other_cleanings_write_no_change_counts(tmp_path):
    frame, _ = planted_tweets()
    frame.to_csv(tmp_path / "tweets.csv", index=False)
    card = prepare_dataset(
        str(tmp_path / "tweets.csv"), "text", "label", tmp_path / "out", PrepareConfig(), "t"
    )
    assert "cleaning_changes" not in card


def test_counts_are_of_the_kept_rows_after_the_cap(tmp_path):
    frame, _ = planted_tweets()
    frame.to_csv(tmp_path / "tweets.csv", index=False)
    cfg = PrepareConfig(cleaning="social", max_rows=15)
    card = prepare_dataset(str(tmp_path / "tweets.csv"), "text", "label", tmp_path / "out", cfg, "tweets")
    kept = pd.concat(
        pd.read_parquet(tmp_path / "out" / f"{s}.parquet") for s in ("train", "validation", "test")
    )
    assert card["rows_kept"] == 15
    assert card["cleaning_changes"]["urls_replaced"] == kept["text"].str.count(URL_PLACEHOLDER).sum()
