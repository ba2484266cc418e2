"""Run inside the sae-lens venv (not the project's): load SAEs with plain ``sae_lens.SAE.load_from_disk``.

Usage: ``python saelens_check.py MANIFEST.json``. The manifest lists cases ``{"sae": DIR, "data": FILE}``;
FILE is a safetensors file with ``x`` (raw activations), ``features`` and ``recon`` (what layershift's own
``load_sae(DIR).encode/decode`` gave). Prints one JSON object: per SAE directory the largest absolute
differences, SAELens's class and architecture, and the metadata SAELens kept. Imports nothing of layershift.
"""

from __future__ import annotations

import json
import sys

import sae_lens
import torch
from sae_lens import SAE
from safetensors.torch import load_file


def main(manifest_path: str) -> None:
    with open(manifest_path) as f:
        manifest = json.load(f)
    out = {"sae_lens_version": sae_lens.__version__, "torch_version": torch.__version__, "cases": {}}
    for case in manifest["cases"]:
        sae = SAE.load_from_disk(case["sae"])  # exactly what a user would call, no converter
        data = load_file(case["data"])
        with torch.no_grad():
            features = sae.encode(data["x"])
            recon = sae.decode(data["features"])
        out["cases"][case["sae"]] = {
            "class": type(sae).__name__,
            "architecture": sae.cfg.architecture(),
            "features_max_abs_diff": (features - data["features"]).abs().max().item(),
            "recon_max_abs_diff": (recon - data["recon"]).abs().max().item(),
            "metadata": sae.cfg.metadata.to_dict(),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
