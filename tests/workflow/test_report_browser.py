"""The study report opens from disk in headless Chromium with every image decoded and every section present, and
its feature pages work there: filtered to one layer's lost features, a click shows a page with their top contexts
and the firing token outlined."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it: apt-get install chromium)"
)
PROBE = """
<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
  const heads = Array.from(document.querySelectorAll("h2")).map(h => h.textContent).join("|");
  const count = document.getElementById("fp-count");
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = `IMAGES=${imgs.length} BROKEN=${broken} PAGES=${count ? count.textContent : "none"} HEADINGS=${heads}`;
  document.body.appendChild(out);
});
</script>
"""
# sets the layer and label filters as a reader would, opens the first listed feature and reports what it shows
FEATURE_PROBE = """
<script>
window.addEventListener("load", () => {
  const choose = (id, value) => {
    const select = document.getElementById(id);
    select.value = value;
    select.dispatchEvent(new Event("change"));
  };
  choose("fp-layer", "__LAYER__");
  choose("fp-label", "__LABEL__");
  const rows = Array.from(document.querySelectorAll("#fp-list tr"));
  const listed = rows.map(row => `${row.children[1].textContent}:${row.children[4].textContent}`);
  if (rows.length) rows[0].click();
  const page = document.getElementById("fp-page");
  const report = {
    listed,
    heading: page.querySelector("h3") ? page.querySelector("h3").textContent : "",
    contexts: page.querySelectorAll(".fp-context").length,
    peaks: Array.from(page.querySelectorAll(".fp-peak")).map(span => span.textContent),
  };
  const out = document.createElement("pre");
  out.id = "feature-probe";
  out.textContent = "FEATURES=" + JSON.stringify(report);
  document.body.appendChild(out);
});
</script>
"""


def open_in_chromium(page_html: str, probe: str, tmp_path: Path) -> str:
    """The DOM Chromium leaves after loading ``page_html`` with ``probe`` appended to its body."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    page = tmp_path / "probed.html"
    page.write_text(page_html.replace("</body>", probe + "</body>"))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
    ]
    proc = subprocess.run([CHROMIUM, *flags, page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "</html>" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def embedded_pages(page_html: str) -> dict:
    found = re.search(r'<script type="application/json" id="fp-data">(.*?)</script>', page_html, re.S)
    assert found, "the report has no feature pages"
    return json.loads(found[1].replace("<\\/", "</"))


def first_page_with_contexts(data: dict) -> tuple[int, str]:
    """(layer, label) whose first listed page has contexts, lost features first: what the probe filters to."""
    pages = [dict(zip(data["fields"], page, strict=True)) for page in data["pages"]]
    for label in ["lost", *sorted({page["label"] for page in pages} - {"lost"})]:
        for group in data["groups"]:
            listed = [
                page for page in pages if data["groups"][page["group"]] is group and page["label"] == label
            ]
            if listed and listed[0]["contexts"]:
                return group["layer"], label
    raise AssertionError("no feature page has contexts")


def shown_features(page_html: str, layer: int, label: str, tmp_path: Path) -> dict:
    """What a reader sees after filtering to ``layer``'s ``label`` features and opening the first one."""
    probe = FEATURE_PROBE.replace("__LAYER__", str(layer)).replace("__LABEL__", label)
    dom = open_in_chromium(page_html, probe, tmp_path)
    found = re.search(r"FEATURES=(\{.*?\})</pre>", dom, re.S)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found[1]))


@needs_chromium
def test_feature_pages_filter_to_one_layers_lost_features_and_show_their_contexts(tmp_path, monkeypatch):
    from tests.unit.test_feature_pages import PLANTED_TOKEN, planted_report

    work = tmp_path / "report"
    work.mkdir()
    monkeypatch.chdir(work)
    page_html = planted_report(work).read_text()
    shown = shown_features(page_html, 2, "lost", tmp_path)
    assert shown["listed"] == ["2:lost"] * 6  # the six lost features of layer 2, nothing else
    assert "layer 2: pretrained feature" in shown["heading"] and shown["heading"].endswith("lost")
    assert shown["contexts"] == 2 and shown["peaks"] == [PLANTED_TOKEN] * 2  # the firing token outlined


@needs_chromium
def test_report_renders_with_all_images(tiny_study_done, tmp_path):
    page_html = (tiny_study_done / "results/report/index.html").read_text()
    dom = open_in_chromium(page_html, PROBE, tmp_path)
    match = re.search(r"IMAGES=(\d+) BROKEN=(\d+) PAGES=([^=]*) HEADINGS=([^<]*)", dom)
    assert match, dom[-2000:]
    images, broken, pages, headings = int(match[1]), int(match[2]), match[3], match[4]
    figures = list((tiny_study_done / "results/figures").rglob("*.png"))
    assert images == len(figures) > 0 and broken == 0
    for section in (
        "The study",
        "Fine-tuning",
        "Layer-wise similarity",
        "Sparse autoencoders",
        "Faithfulness",
        "Features and probe sentences",
        "Feature diff",
        "Feature pages",
        "Findings",
    ):
        assert section in headings

    # the feature pages' script ran on the real report: it counted the pages the report embeds
    data = embedded_pages(page_html)
    assert pages == f"{len(data['pages'])} of {len(data['pages'])} features match", pages
    if not data["pages"]:  # no stable feature in any layer (an inconclusive diff): nothing more to open
        assert "0 feature pages" in page_html
        return
    # filtered to one layer's features of one label (lost where the study has any), the first one's page shows
    # its top contexts
    layer, label = first_page_with_contexts(data)
    shown = shown_features(page_html, layer, label, tmp_path / "features")
    assert shown["listed"] and set(shown["listed"]) == {f"{layer}:{label}"}
    assert shown["contexts"] > 0 and len(shown["peaks"]) == shown["contexts"]

    # the report's size: the pages' data grows by a bounded number of bytes per page (contexts of at most
    # CONTEXT_TOKENS tokens, two digits' worth per token plus its string's index)
    from layershift.report.feature_pages import CONTEXT_TOKENS, CONTEXTS_PER_PAGE

    embedded = re.search(r'id="fp-data">(.*?)</script>', page_html, re.S)[1]
    strings = len(json.dumps(data["strings"]).encode())
    per_page = (len(embedded.encode()) - strings) / len(data["pages"])
    assert per_page < 300 + CONTEXTS_PER_PAGE * (30 + 6 * CONTEXT_TOKENS), per_page
