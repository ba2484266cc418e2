"""Our SAE files load in the real SAELens (``SAE.load_from_disk``, no converter) and encode/decode like ours.

SAELens runs in its own venv (``make saelens-venv`` builds ``.venv-saelens`` from ``envs/saelens.lock``; it is
kept out of the project's environment) through ``tests/workflow/saelens_check.py`` in a subprocess. Without that venv
the tests skip, except under CI (``CI`` set), where a missing venv is a failure.
``LAYERSHIFT_SAELENS_RESULTS=results`` points the study test at a finished study's ``results/`` instead of the
tiny study (``make check-saelens`` does this for the default study).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from layershift.data.shards import ShardReader
from layershift.dictionaries.interop import SAELENS_ARCHITECTURES
from layershift.dictionaries.sae.config import SAEConfig
from layershift.dictionaries.sae.files import load_sae, save_sae
from layershift.dictionaries.sae.model import SAE
from tests.support.study import ROOT

SAELENS_VENV = Path(os.environ.get("LAYERSHIFT_SAELENS_VENV", ROOT / ".venv-saelens"))
CHECK_SCRIPT = Path(__file__).with_name("saelens_check.py")
TOLERANCE = 1e-4
SAELENS_CLASSES = {"relu": "StandardSAE", "topk": "TopKSAE"}


def saelens_python() -> Path:
    python = SAELENS_VENV / "bin" / "python"
    if python.exists():
        return python
    reason = f"no sae-lens venv at {SAELENS_VENV} (`make saelens-venv` builds it)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason}; CI must build it before the tests")
    pytest.skip(reason)


def write_case(sae_dir: Path, x: np.ndarray, data_path: Path) -> dict:
    """Our own reading of ``sae_dir`` on raw rows ``x``, saved for the SAELens side to compare against."""
    sae = load_sae(sae_dir)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    with torch.no_grad():
        features = sae.encode(xt)
        recon = sae.decode(features)
    save_file({"x": xt, "features": features.contiguous(), "recon": recon.contiguous()}, data_path)
    return {"sae": str(sae_dir), "data": str(data_path)}


def run_saelens(cases: list[dict], workdir: Path) -> dict:
    python = saelens_python()
    manifest = workdir / "manifest.json"
    manifest.write_text(json.dumps({"cases": cases}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(python), str(CHECK_SCRIPT), str(manifest)],
        capture_output=True,
        text=True,
        env={**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        timeout=900,
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_matches(result: dict, cfg: SAEConfig) -> None:
    assert result["architecture"] == SAELENS_ARCHITECTURES[cfg.architecture]
    assert result["class"] == SAELENS_CLASSES[cfg.architecture]
    assert result["features_max_abs_diff"] <= TOLERANCE, result
    assert result["recon_max_abs_diff"] <= TOLERANCE, result
    for key, value in cfg.metadata.items():  # provenance survives SAELens's loading
        assert result["metadata"].get(key) == value, (key, result["metadata"])
    assert result["metadata"]["hook_name"] == cfg.hook_name


def test_every_architecture_and_normalisation_loads_in_saelens(tmp_path):
    saelens_python()  # skip (or, under CI, fail) before building anything
    d_in, d_sae = 24, 40
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, d_in)) * 6.0 + 2.5).astype(np.float32)  # far from unit scale
    cases, configs = [], {}
    for architecture in ("relu", "topk"):
        for mode in ("none", "expected_average_only_in", "center_and_scale"):
            meta = {"model": "m", "dataset": "d", "stage": "finetuned", "layer": 3, "seed": 7, "lr": 1e-3}
            cfg = SAEConfig(
                d_in,
                d_sae,
                architecture,
                k=5,
                normalize_activations=mode,
                hook_name="hidden_states.3",
                metadata=meta,
            )
            sae = SAE(cfg, seed=1)
            with torch.no_grad():  # non-trivial biases and decoder norms
                sae.b_enc.normal_(0.0, 0.3)
                sae.b_dec.normal_(0.0, 0.5)
                sae.W_dec.mul_(torch.rand(d_sae, 1) + 0.5)
            if mode != "none":
                sae.set_normalization(0.17, x.mean(axis=0) if mode == "center_and_scale" else None)
            directory = tmp_path / f"{architecture}-{mode}"
            save_sae(sae, directory)
            with torch.no_grad():  # our loader still returns the same function as the trained object
                assert torch.equal(
                    load_sae(directory).encode(torch.from_numpy(x)), sae.encode(torch.from_numpy(x))
                )
            cases.append(write_case(directory, x, tmp_path / f"{architecture}-{mode}.safetensors"))
            configs[str(directory)] = sae.cfg
    report = run_saelens(cases, tmp_path)
    assert report["sae_lens_version"] == "6.54.12"
    for directory, cfg in configs.items():
        assert_matches(report["cases"][directory], cfg)


@pytest.mark.slow
def test_every_study_sae_loads_in_saelens(request, tmp_path):
    """Every SAE of a study (its SAEs and seed-null SAEs) on rows of the layer it was trained on."""
    saelens_python()
    given = os.environ.get("LAYERSHIFT_SAELENS_RESULTS")
    results = Path(given) if given else request.getfixturevalue("tiny_study_done") / "results"
    sae_dirs = sorted(p.parent for p in results.glob("sae*/**/cfg.json"))
    assert sae_dirs, f"no SAEs under {results}"
    cases, configs = [], {}
    for i, directory in enumerate(sae_dirs):
        cfg = load_sae(directory).cfg
        meta = cfg.metadata
        run = meta.get("run", meta["stage"])  # the run (pretrained or a replicate) whose rows trained it
        shards = results / "activations" / meta["model"] / meta["dataset"] / run / "tokens"
        x = next(ShardReader(shards / f"layer{meta['layer']}").iter_batches(1024))
        cases.append(write_case(directory, x, tmp_path / f"case{i}.safetensors"))
        configs[str(directory)] = cfg
    report = run_saelens(cases, tmp_path)
    assert len(report["cases"]) == len(sae_dirs)
    for directory, cfg in configs.items():
        assert_matches(report["cases"][directory], cfg)
