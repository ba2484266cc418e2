"""The plotting base every figure module shares: matplotlib without a display, seaborn imported without scipy,
one colour-blind-safe theme, and an atomic PNG + SVG writer."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@contextlib.contextmanager
def _scipy_hidden():
    """Make ``import scipy`` fail inside the block, unless scipy is already loaded.

    seaborn imports scipy.stats only for its KDE (and scipy.cluster for clustermap) and falls back to its own
    copy when scipy is missing; no figure here uses either. Importing seaborn without scipy halves the start-up
    of a figure job, most of which is imports (1.3 of 2.7 CPU-s here; 80 figure jobs in the default study).
    Afterwards ``import scipy`` works as usual in this process.
    """
    hide = "scipy" not in sys.modules
    if hide:
        sys.modules["scipy"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if hide and sys.modules.get("scipy", 0) is None:
            del sys.modules["scipy"]


with _scipy_hidden():
    import seaborn as sns  # noqa: E402

from layershift.core.io import atomic_path  # noqa: E402


def theme(palette: str = "colorblind") -> None:
    sns.set_theme(style="whitegrid", context="notebook", palette=palette, font_scale=0.9)


def save(fig: plt.Figure, png_path: str | Path, dpi: int = 120) -> None:
    """Write ``png_path`` and the ``.svg`` beside it; never leaves a partial image under either name."""
    png_path = Path(png_path)
    for path, fmt in ((png_path, "png"), (png_path.with_suffix(".svg"), "svg")):
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def hue_colours(levels: list) -> dict:
    """The colour seaborn gives each categorical hue level: the current palette, husl beyond its length."""
    palette = None if len(levels) <= len(sns.color_palette()) else "husl"
    return dict(zip(levels, sns.color_palette(palette, len(levels)), strict=True))
