"""The cost model's calibration to the machine at hand: the probe, the per-coefficient scaling, the
calibration file (its round trip and the other-machine rule) and the command line. No timed asserts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from layershift.cli import main
from layershift.costs import calibration, probe
from layershift.costs.coefficients import load_coefficients
from layershift.costs.predict import job_resources, predict_job, predict_study
from layershift.study.schema import load_yaml, validate_schema

REPO = Path(__file__).resolve().parents[2]
RUN = {
    "model": "minilm-l6",
    "dataset": "tweets",
    "stage": "finetuned-s14",
}  # a replicate of the default study
ENCODER_JOBS = [
    ("finetune", RUN),
    ("extract", {**RUN, "stage": "pretrained"}),
    ("evaluate", RUN),
]
OTHER_JOBS = [
    ("prepare", {"dataset": "tweets"}),
    ("train_sae", {**RUN, "layer": "3"}),
    (
        "diff",
        {
            "model": "minilm-l6",
            "dataset": "tweets",
            "reference": "finetuned-s13",
            "compared": "finetuned-s14",
            "layer": "3",
        },
    ),
]


@pytest.fixture(scope="module")
def config() -> dict:
    return validate_schema(load_yaml(REPO / "config.yaml"), "config.yaml")


def machine_record(factors: dict[str, float] | None = None, machine: dict | None = None) -> dict:
    """A calibration record of a machine whose probe values are the reference's times ``factors``."""
    reference = load_coefficients()[calibration.REFERENCE_KEY]["probes"]
    factors = factors or {}
    probes = {name: {"value": entry["value"] * factors.get(name, 1.0)} for name, entry in reference.items()}
    return {
        "probes": probes,
        "machine": machine or calibration.this_machine(),
        "date": "2026-12-05",
        "wall_s": 1.0,
    }


def compute_seconds(prediction: dict, rule: str, coefficients: dict) -> float:
    """The part of a CPU prediction that scales with work (the prediction less the fitted overhead)."""
    return prediction["cpu_s"] - coefficients["rules"][rule]["overhead_s"]


def test_the_shipped_coefficients_record_the_reference_probe_and_its_machine():
    reference = load_coefficients()[calibration.REFERENCE_KEY]
    assert set(reference["probes"]) == set(probe.PROBES) == set(probe.UNITS)
    assert all(entry["value"] > 0 for entry in reference["probes"].values())
    assert reference["machine"]["cpu_model"] and reference["machine"]["nproc"] >= 1 and reference["date"]


def test_a_machine_twice_as_fast_at_matmul_halves_the_encoder_rules_and_leaves_the_others(config, tmp_path):
    fitted = load_coefficients()
    scaled = calibration.calibrated_coefficients(fitted, machine_record({"encoder_matmul": 0.5}))
    for rule, wildcards in ENCODER_JOBS:
        before = predict_job(rule, config, wildcards, tmp_path, coefficients=fitted)
        after = predict_job(rule, config, wildcards, tmp_path, coefficients=scaled)
        assert compute_seconds(after, rule, fitted) == pytest.approx(
            compute_seconds(before, rule, fitted) / 2
        )
        assert after["gpu_s"] == before["gpu_s"] and after["mem_mb"] == before["mem_mb"]
    for rule, wildcards in OTHER_JOBS:
        before = predict_job(rule, config, wildcards, tmp_path, coefficients=fitted)
        after = predict_job(rule, config, wildcards, tmp_path, coefficients=scaled)
        assert after == pytest.approx(before)


def test_sae_steps_scale_train_sae_fully_and_the_diff_by_its_matmul_share(config, tmp_path):
    fitted = load_coefficients()
    scaled = calibration.calibrated_coefficients(fitted, machine_record({"sae_step": 0.5}))
    sae_job, diff_job = OTHER_JOBS[1], OTHER_JOBS[2]
    seconds = [
        compute_seconds(
            predict_job(rule, config, wildcards, tmp_path, coefficients=coefficients), rule, fitted
        )
        for rule, wildcards in (sae_job, diff_job)
        for coefficients in (fitted, scaled)
    ]
    assert seconds[1] == pytest.approx(seconds[0] / 2)
    share = fitted["rules"]["train_sae"]["s_per_gflop"] / fitted["rules"]["diff"]["s_per_gflop"]
    assert 0 < share < 1  # the diff's matmuls; the rest (reading shards) is not sped up
    assert seconds[3] == pytest.approx(seconds[2] * (1 - share / 2))


def test_slower_start_up_scales_every_overhead_and_the_light_jobs_on_the_cpu_only(config, tmp_path):
    fitted = load_coefficients()
    scaled = calibration.calibrated_coefficients(fitted, machine_record({"startup": 2.0}))
    before = predict_study(config, tmp_path, coefficients=fitted)
    after = predict_study(config, tmp_path, coefficients=scaled)
    assert after["light_s"] == pytest.approx(2 * before["light_s"])
    assert after["gpu_s_total"] == pytest.approx(before["gpu_s_total"])
    assert after["cpu_s_total"] > before["cpu_s_total"]
    prepare = predict_job("prepare", config, {"dataset": "tweets"}, tmp_path, coefficients=scaled)
    assert prepare["cpu_s"] == pytest.approx(2 * fitted["rules"]["prepare"]["overhead_s"])


def test_gpu_requests_stay_as_fitted_and_cpu_requests_follow_the_calibration(config, tmp_path):
    fitted = load_coefficients()
    slow = calibration.calibrated_coefficients(fitted, machine_record(dict.fromkeys(probe.PROBES, 4.0)))
    rule, wildcards = ENCODER_JOBS[0]
    for gpus in (1, 0):
        before = job_resources(rule, config, wildcards, tmp_path, gpus=gpus, coefficients=fitted)
        after = job_resources(rule, config, wildcards, tmp_path, gpus=gpus, coefficients=slow)
        assert (after == before) == bool(gpus)


def test_a_calibration_file_round_trips_and_says_so(tmp_path):
    path = tmp_path / "calibration.json"
    record = machine_record({"encoder_matmul": 0.8})
    calibration.write_calibration(record, path)
    read, note = calibration.read_calibration(path)
    assert read == record and note is None
    coefficients, lines = calibration.machine_coefficients(path)
    assert coefficients["calibration"]["factors"]["encoder_matmul"] == pytest.approx(0.8)
    assert lines == [calibration.describe(coefficients)]
    assert "calibrated on this machine on 2026-12-05" in lines[0] and "GPU predictions as fitted" in lines[0]


@pytest.mark.parametrize("other", [{"cpu_model": "Some Other CPU"}, {"nproc": 64}])
def test_a_calibration_from_another_machine_is_ignored_with_one_line(tmp_path, other):
    path = tmp_path / "calibration.json"
    calibration.write_calibration(machine_record(machine={**calibration.this_machine(), **other}), path)
    coefficients, lines = calibration.machine_coefficients(path)
    assert "calibration" not in coefficients and len(lines) == 2
    assert "another machine" in lines[0] and "ignored" in lines[0] and "\n" not in lines[0]
    assert "as fitted" in lines[1]


def test_no_file_or_an_unreadable_one_predicts_as_fitted(tmp_path):
    coefficients, lines = calibration.machine_coefficients(tmp_path / "absent.json")
    assert coefficients == load_coefficients() and len(lines) == 1 and "as fitted" in lines[0]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    _, lines = calibration.machine_coefficients(broken)
    assert "unreadable" in lines[0] and "as fitted" in lines[1]
    older = machine_record()
    del older["probes"]["startup"]
    calibration.write_calibration(older, broken)
    coefficients, lines = calibration.machine_coefficients(broken)
    assert "calibration" not in coefficients and "lacks the probes startup" in lines[0]


def test_the_calibration_path_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(calibration.CALIBRATION_ENV, "none")
    assert calibration.calibration_path() is None
    monkeypatch.setenv(calibration.CALIBRATION_ENV, str(tmp_path / "mine.json"))
    assert calibration.calibration_path() == tmp_path / "mine.json"
    monkeypatch.delenv(calibration.CALIBRATION_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert calibration.calibration_path() == tmp_path / "cache" / "layershift" / "calibration.json"


def test_the_probe_with_a_tiny_budget_measures_sane_positive_numbers():
    threads = torch.get_num_threads()
    measured = probe.run_probe(budget_s=0.1)
    assert set(measured["probes"]) == set(probe.PROBES)
    for name, result in measured["probes"].items():
        assert math.isfinite(result["value"]) and result["value"] > 0, name
        assert result["low"] <= result["value"] <= result["high"] and result["repeats"] >= 1
    assert measured["cpu_s"] > 0 and measured["wall_s"] > 0
    assert torch.get_num_threads() == threads  # the probe's one thread is given back


@pytest.fixture
def quick_probe(monkeypatch):
    """The CLI's probe replaced by one that reports a machine 2x faster at encoder matmuls, instantly."""

    def run_probe(budget_s, report=None):
        return {
            key: value for key, value in machine_record({"encoder_matmul": 0.5}).items() if key != "machine"
        }

    monkeypatch.setattr(probe, "run_probe", run_probe)


def test_cli_calibrate_writes_the_file_that_costs_then_reads(quick_probe, monkeypatch, tmp_path, capsys):
    path = tmp_path / "calibration.json"
    assert main(["calibrate", "--output", str(path)]) == 0
    written = json.loads(path.read_text())
    assert written["machine"] == calibration.this_machine() and set(written["probes"]) == set(probe.PROBES)
    assert "encoder_matmul 0.50" in capsys.readouterr().err
    monkeypatch.setenv(calibration.CALIBRATION_ENV, str(path))
    assert main(["costs", str(REPO / "config.yaml"), "--gpu-nodes", "0"]) == 0
    assert f"calibrated on this machine on {written['date']}" in capsys.readouterr().out


def test_cli_costs_calibrate_probes_and_predicts_scaled(quick_probe, capsys):
    assert main(["costs", str(REPO / "config.yaml"), "--gpu-nodes", "0"]) == 0
    as_fitted = capsys.readouterr().out
    assert main(["costs", str(REPO / "config.yaml"), "--gpu-nodes", "0", "--calibrate"]) == 0
    captured = capsys.readouterr()
    assert "CPU coefficients as fitted" in as_fitted and "encoder_matmul x0.50" in captured.out
    assert "encoder_matmul 0.50" in captured.err and captured.out != as_fitted


def test_cli_costs_notes_a_calibration_from_another_machine(monkeypatch, tmp_path, capsys):
    path = tmp_path / "calibration.json"
    calibration.write_calibration(machine_record(machine={"cpu_model": "Other", "nproc": 99}), path)
    monkeypatch.setenv(calibration.CALIBRATION_ENV, str(path))
    assert main(["costs", str(REPO / "config.yaml"), "--gpu-nodes", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "another machine" in captured.err
    assert "CPU coefficients as fitted" in captured.out


def test_cli_calibrate_refuses_a_disabled_path_and_a_bad_budget(monkeypatch, capsys):
    monkeypatch.setenv(calibration.CALIBRATION_ENV, "none")
    assert main(["calibrate"]) == 1
    assert "--output" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate", "--budget", "0"])
    assert exit_.value.code == 2 and "must be positive" in capsys.readouterr().err
