"""The study report opens from disk in headless Chromium with every image decoded and every section present."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = """
<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).length;
  const heads = Array.from(document.querySelectorAll("h2")).map(h => h.textContent).join("|");
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = `IMAGES=${imgs.length} BROKEN=${broken} HEADINGS=${heads}`;
  document.body.appendChild(out);
});
</script>
"""


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it: apt-get install chromium)"
)
def test_report_renders_with_all_images(tiny_study_done, tmp_path):
    page = tmp_path / "index.html"
    html = (tiny_study_done / "results/report/index.html").read_text()
    page.write_text(html.replace("</body>", PROBE + "</body>"))
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
    match = re.search(r"IMAGES=(\d+) BROKEN=(\d+) HEADINGS=([^<]*)", proc.stdout)
    assert match, proc.stderr[-2000:]
    images, broken, headings = int(match[1]), int(match[2]), match[3]
    figures = list((tiny_study_done / "results/figures").rglob("*.png"))
    assert images == len(figures) > 0 and broken == 0
    for section in (
        "The study",
        "Fine-tuning",
        "Layer-wise similarity",
        "Sparse autoencoders",
        "Features and probe sentences",
        "Feature diff",
        "Findings",
    ):
        assert section in headings
