"""The cost model (layershift.costs) and the rules table it reads (layershift.study.rules): work scales with the
config, shapes come from config.json, the shipped coefficients load, resources have their floors and safety
factors (that the workflow requests them, and that the rules table is the workflow's:
tests/workflow/test_costs_workflow.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from layershift.costs import coefficients, inputs, predict, schedule
from layershift.costs.work import CURVE_SAES, WORK, diff_sae_count, sae_count, work
from layershift.study import rules as workflow_rules
from layershift.study import targets
from layershift.study.schema import load_yaml, validate_schema

REPO = Path(__file__).resolve().parents[2]


def run_in_bench(code: str):
    """Run ``code`` in a child interpreter inside bench/ (its scripts import each other from there) and return
    what it prints, parsed as JSON: the benchmark scripts stay out of the test process and its imports."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO / "bench",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def study(
    tmp_path: Path,
    rows: int = 1000,
    hidden: int = 64,
    layers: int = 4,
    null_seeds: int = 1,
    seeds: list[int] | None = None,
) -> dict:
    """A validated config on a config.json-only model and a hub dataset (token counts from the caps), with a
    fine-tuning replicate per seed of ``seeds`` (none: one run, the study seed's)."""
    from tests.support.models import write_bert_config

    model_dir = write_bert_config(tmp_path / f"m{hidden}x{layers}", n_layers=layers, hidden=hidden, heads=2)
    config = {
        "models": {"m": {"source": f"path:{model_dir}", "sae_layers": [1, layers]}},
        "datasets": {"d": {"source": "hub:someone/some-data", "text": "text", "label": "label"}},
        "data": {"max_rows": rows},
        "finetune": {"epochs": 2, "batch_size": 10, "max_length": 32},
        "sae": {"null_seeds": null_seeds},
    }
    if seeds:
        config["replicates"] = {"seeds": seeds}
    return validate_schema(config, "test")


def test_model_shape_is_read_from_config_json(tmp_path):
    config = study(tmp_path, hidden=48, layers=3)
    shape = inputs.model_shape(config, "m", tmp_path / "results")
    assert (shape.layers, shape.hidden, shape.intermediate, shape.vocab) == (3, 48, 96, 64)
    assert shape.basis == "config.json"
    assert shape.params_blocks == 3 * (4 * 48**2 + 2 * 48 * 96)


def test_unknown_hub_model_falls_back_to_a_large_shape_and_known_ones_are_known():
    paper = validate_schema(load_yaml(REPO / "configs/paper.yaml"), "paper")
    tiny = inputs.model_shape(paper, "bert-tiny")
    assert (tiny.layers, tiny.hidden) == (2, 128)
    config = {"models": {"x": {"source": "hub:nobody/not-cached-anywhere-xyz", "sae_layers": [1]}}}
    fallback = inputs.model_shape(config, "x")
    assert (fallback.layers, fallback.hidden) == (24, 1024) and "assumed" in fallback.basis


def test_bert_base_parameter_count_matches_the_published_110m():
    shape = inputs.Shape(*inputs.KNOWN_SHAPES["bert-base-uncased"])
    assert 108e6 < shape.params < 111e6


def test_finetune_work_doubles_with_rows_and_with_epochs(tmp_path):
    small = work("finetune", study(tmp_path, rows=1000), {"model": "m", "dataset": "d"})
    large = work("finetune", study(tmp_path, rows=2000), {"model": "m", "dataset": "d"})
    assert large.flop / small.flop == pytest.approx(2.0, rel=0.01)
    config = study(tmp_path, rows=1000)
    config["finetune"]["epochs"] = 4
    assert work("finetune", config, {"model": "m", "dataset": "d"}).flop / small.flop == pytest.approx(2.0)
    assert inputs.dataset_stats(config, "d").basis == "caps"


def test_wider_model_costs_more_per_token(tmp_path):
    narrow = work(
        "extract", study(tmp_path, hidden=32), {"model": "m", "dataset": "d", "stage": "pretrained"}
    )
    wide = work("extract", study(tmp_path, hidden=64), {"model": "m", "dataset": "d", "stage": "pretrained"})
    assert 3.0 < wide.flop / narrow.flop < 4.1  # ~ hidden^2


def test_train_sae_work_follows_the_number_of_saes(tmp_path):
    wildcards = {"model": "m", "dataset": "d", "stage": "finetuned-s13", "layer": "1"}
    one = work("train_sae", study(tmp_path, null_seeds=1), wildcards)
    three = work("train_sae", study(tmp_path, null_seeds=3), wildcards)
    assert sae_count(study(tmp_path, null_seeds=3)) == 1 + 3  # one run's SAE and its three nulls
    assert three.flop / one.flop == pytest.approx(
        sae_count(study(tmp_path, null_seeds=3)) / sae_count(study(tmp_path, null_seeds=1)),
        rel=0.01,
    )
    # a diff reads each side's SAE and its first null, however many nulls there are
    assert (
        diff_sae_count(study(tmp_path, null_seeds=3)) == 4
        and diff_sae_count(study(tmp_path, null_seeds=0)) == 2
    )


def test_verdict_curve_work_is_four_sae_trainings_and_a_diff_per_fraction(tmp_path):
    """With ``training_tokens`` a curve point's SAEs take the study's steps whatever their rows (more passes
    over fewer rows); with ``epochs`` the steps shrink with the rows. The diff part scales with the rows."""
    wildcards = {"model": "m", "dataset": "d", "layer": "1"}
    sae_wildcards = {**wildcards, "stage": "pretrained"}
    diff_wildcards = {**wildcards, "reference": "pretrained", "compared": "finetuned-s13"}
    curve = {"model": "m", "dataset": "d", "fractions": [0.25, 0.5, 1.0]}  # 1: read, not computed
    for sae, steps_ratio in (({"training_tokens": 100_000}, 2.0), ({"epochs": 10}, 0.75)):
        config = study(tmp_path)
        config["sae"].update(sae)
        config["verdict_curve"] = curve
        # one run's two SAEs on every row; a curve point trains both runs' (four SAEs)
        one_point = CURVE_SAES / sae_count(config) * work("train_sae", config, sae_wildcards).steps
        points = work("verdict_curve", config, wildcards)
        # passes are whole numbers: a point's steps round differently from the study's
        assert sae_count(config) == 2 and points.steps == pytest.approx(steps_ratio * one_point, rel=0.15)
        diff = work("diff", config, diff_wildcards).host_values
        assert work("verdict_curve", config, wildcards).host_values > 0.75 * diff
    config["verdict_curve"] = {**curve, "fractions": []}
    assert work("verdict_curve", config, wildcards).flop == 0.0


def test_shipped_coefficients_cover_every_model_rule():
    """Every rule with a cost model is measured (its own fit, or the rule's whose code it runs), except the
    ONNX import, which the measured studies do not run and which keeps its stated assumptions."""
    shipped = coefficients.load_coefficients()
    measured = set(shipped["rules"]) | set(coefficients.BORROWED_COEFFICIENTS)
    assert set(WORK) - measured == {"import_onnx"}
    for rule in set(WORK) & measured:
        entry = coefficients.rule_coefficients(rule, shipped)
        assert entry["overhead_s"] >= 0 and entry["s_per_gflop"] >= 0 and entry["mem_base_mb"] > 0, rule
    assert shipped["light_job_s"] > 0


def test_fit_is_non_negative_and_exact_on_a_line():
    rising, falling, steep = [3, 5, 9], [9, 5, 3], [0.5, 4, 12]
    fits = run_in_bench(
        "import json; from bench_costs import fit_line; "
        f"print(json.dumps([fit_line([1, 2, 4], y) for y in {[rising, falling, steep]}]))"
    )
    assert fits[0] == pytest.approx([1.0, 2.0])
    overhead, slope = fits[1]  # falling: no negative slope, the mean instead
    assert slope == 0.0 and overhead == pytest.approx(17 / 3)
    overhead, slope = fits[2]  # negative intercept: through the origin instead
    assert overhead == 0.0 and slope > 0


def test_resources_have_floors_and_safety_factors(tmp_path):
    small = predict.job_resources("probes", study(tmp_path), {"model": "m", "dataset": "d"})
    assert small == {"runtime": predict.FLOOR_MINUTES, "mem_mb": predict.FLOOR_MB}
    paper = validate_schema(load_yaml(REPO / "configs/paper.yaml"), "paper")
    wildcards = {"model": "bert-base", "dataset": "imdb"}
    predicted = predict.predict_job("finetune", paper, wildcards)
    gpu = predict.job_resources("finetune", paper, wildcards)  # paper.yaml: gpus 1, so the GPU prediction
    assert gpu["runtime"] == max(
        predict.FLOOR_MINUTES, math.ceil(predict.SAFETY_TIME * predicted["gpu_s"] / 60)
    )
    assert gpu["mem_mb"] >= predict.SAFETY_MEM * predicted["mem_mb"]
    cpu = predict.job_resources("finetune", paper, wildcards, gpus=0)
    assert cpu["runtime"] > gpu["runtime"]  # a CPU run of bert-base on 20k rows x 10 epochs takes far longer
    tiny = predict.job_resources("finetune", paper, {"model": "bert-tiny", "dataset": "imdb"}, gpus=0)
    assert tiny["runtime"] < cpu["runtime"] and tiny["mem_mb"] < gpu["mem_mb"]


def test_study_prediction_counts_jobs_and_disk():
    """The job counts `snakemake -n --forceall` schedules: the default study (one model, one dataset, three
    SAE layers, three replicates compared with the pretrained run and with each other) and the breadth study
    (one run; its verdict curve and ONNX import)."""
    config = validate_schema(load_yaml(REPO / "config.yaml"), "config.yaml")
    prediction = predict.predict_study(config, cores=2, gpu_nodes=2)
    jobs = {rule: summary["jobs"] for rule, summary in prediction["rules"].items()}
    assert jobs["finetune"] == jobs["evaluate"] == 3  # per replicate
    assert jobs["extract"] == 4 and jobs["train_sae"] == 4 * 3  # per run (pretrained + 3) x layer
    assert jobs["diff"] == 6 * 3  # 3 pretrained-vs-replicate and 3 replicate-pair comparisons per layer
    assert jobs["crosscoder"] == jobs["features"] == 3 and jobs["probes"] == 1  # the primary pair
    assert jobs["faithfulness"] == 4  # per run
    assert "sae_sweep" not in jobs
    assert prediction["jobs"] == 87
    assert (
        prediction["wall_s_local"] >= prediction["longest_chain_cpu_s"] and prediction["wall_s_cluster"] > 0
    )
    assert prediction["disk_bytes"]["total"] > 0
    breadth = validate_schema(load_yaml(REPO / "configs/breadth.yaml"), "breadth.yaml")
    assert predict.predict_study(breadth, cores=2)["jobs"] == 229


def test_disk_scales_with_runs(tmp_path):
    """Three replicates: three fine-tuned models, four runs' activations and SAEs, one crosscoder per layer."""
    one = predict.disk_bytes(study(tmp_path), tmp_path / "results")
    three = predict.disk_bytes(study(tmp_path, seeds=[1, 2, 3]), tmp_path / "results")
    assert three["models"] == pytest.approx(3 * one["models"])
    assert three["activations"] == pytest.approx(2 * one["activations"])  # 4 runs against 2
    assert three["saes"] == pytest.approx(2 * one["saes"])
    assert three["crosscoders"] == pytest.approx(one["crosscoders"])


def test_cli_costs_prints_per_rule_table(capsys):
    from layershift.cli import main

    assert main(["costs", str(REPO / "configs/paper.yaml"), "--gpu-nodes", "4"]) == 0
    out = capsys.readouterr().out
    assert "| finetune | 12 |" in out and "4 GPU node(s)" in out and "disk:" in out


@pytest.mark.parametrize("rows", [120, 480])
def test_the_cost_benchmarks_cut_studies_are_valid_configs(rows):
    """bench_costs.py cuts configs/breadth.yaml to one model x dataset: the cut must still pass the config checks
    (the sweep once pointed at a dataset the cut had dropped, and the benchmark failed at its first study)."""
    from layershift.config import check_semantics

    code = f"import json; from bench_costs import study_config; print(json.dumps(study_config({rows})))"
    config = validate_schema(run_in_bench(code), "cut.yaml")
    check_semantics(config, "cut.yaml", REPO)  # raises a ConfigError on a cut the workflow would refuse
    assert config["data"]["max_rows"] == rows and len(config["models"]) == len(config["datasets"]) == 1
    sweep = targets.sweep_layer(config)
    assert sweep["model"] in config["models"] and sweep["dataset"] in config["datasets"]
    jobs = predict.study_jobs(config)
    assert jobs["sae_sweep"] == [{**sweep, "layer": str(sweep["layer"])}]  # wildcards are strings
    assert len(jobs["finetune"]) == 1  # the cost model sees the cut's study


def test_token_counts_come_only_from_this_datasets_prepared_splits(tmp_path):
    """Another config's results may hold a different corpus under the same dataset name (the paper's hub
    `news` beside the demo's `news`): its splits are used only when the card names this source and row cap."""
    import json

    import pandas as pd

    config = study(tmp_path, rows=1000)
    prepared = tmp_path / "results" / "data" / "d"
    prepared.mkdir(parents=True)
    for split, rows in (("train", 8), ("validation", 1), ("test", 1)):
        pd.DataFrame({"text": ["a few words here"] * rows}).to_parquet(prepared / f"{split}.parquet")

    def card(source, max_rows):
        (prepared / "card.json").write_text(
            json.dumps({"source": source, "settings": {"max_rows": max_rows}})
        )
        return inputs.dataset_stats(config, "d", tmp_path / "results")

    ours = card("hub:someone/some-data", 1000)
    assert ours.basis == "prepared" and ours.rows["train"] == 8
    assert card("data/demo/other.csv", 1000).basis == "caps"
    assert card("hub:someone/some-data", 50).basis == "caps"  # prepared under another row cap
    (prepared / "card.json").unlink()
    assert inputs.dataset_stats(config, "d", tmp_path / "results").basis == "caps"


def test_a_job_waits_for_the_upstream_jobs_of_the_runs_it_reads(tmp_path):
    config = study(tmp_path, seeds=[13, 14])  # primary pair: pretrained, finetuned-s13
    pair = {"model": "m", "dataset": "d"}

    def waits(job, upstream_job) -> bool:
        return schedule.waits_for(config, job, upstream_job)

    finetune = {run: ("finetune", {**pair, "stage": run}) for run in ("finetuned-s13", "finetuned-s14")}
    extract = {run: ("extract", {**pair, "stage": run}) for run in targets.runs(config)}
    assert not any(waits(extract["pretrained"], job) for job in finetune.values())
    assert waits(extract["finetuned-s14"], finetune["finetuned-s14"])
    assert not waits(extract["finetuned-s14"], finetune["finetuned-s13"])
    assert not waits(
        extract["finetuned-s14"], ("finetune", {"model": "m", "dataset": "other", "stage": "finetuned-s14"})
    )
    assert waits(("probes", pair), finetune["finetuned-s13"]) and not waits(
        ("probes", pair), finetune["finetuned-s14"]
    )
    crosscoder = ("crosscoder", {**pair, "layer": "1"})
    assert waits(crosscoder, extract["pretrained"]) and waits(crosscoder, extract["finetuned-s13"])
    assert not waits(crosscoder, extract["finetuned-s14"])

    def sae(run, layer="1"):
        return ("train_sae", {**pair, "stage": run, "layer": layer})

    def diff(reference, compared):
        return ("diff", {**pair, "reference": reference, "compared": compared, "layer": "1"})

    between = diff("finetuned-s13", "finetuned-s14")
    assert waits(between, sae("finetuned-s13")) and waits(between, sae("finetuned-s14"))
    assert waits(between, extract["finetuned-s14"]) and not waits(between, extract["pretrained"])
    assert not waits(between, sae("pretrained")) and not waits(between, sae("finetuned-s14", layer="2"))
    assert waits(diff("pretrained", "finetuned-s13"), crosscoder)  # the crosscoder: the primary pair only
    assert not waits(between, crosscoder) and not waits(diff("pretrained", "finetuned-s14"), crosscoder)
    curve = ("verdict_curve", {**pair, "layer": "1"})
    assert waits(curve, diff("pretrained", "finetuned-s13")) and not waits(curve, between)
    features = ("features", {**pair, "layer": "1"})
    assert waits(features, sae("finetuned-s13")) and not waits(features, sae("finetuned-s14"))


def test_list_schedule_waits_for_upstream_jobs_and_fills_free_slots(tmp_path):
    config = study(tmp_path, seeds=[13, 14])
    pair = {"model": "m", "dataset": "d"}
    jobs = [
        ("finetune", {**pair, "stage": "finetuned-s13"}, 10.0),
        ("finetune", {**pair, "stage": "finetuned-s14"}, 20.0),
        ("extract", {**pair, "stage": "pretrained"}, 4.0),  # needs only the split: beside the fine-tunes
        ("extract", {**pair, "stage": "finetuned-s13"}, 4.0),  # after its own fine-tune, not s14's
        ("extract", {**pair, "stage": "finetuned-s14"}, 4.0),
        ("crosscoder", {**pair, "layer": "1"}, 5.0),  # after the primary pair's extracts: from 14 s
        ("diff", {**pair, "reference": "pretrained", "compared": "finetuned-s14", "layer": "1"}, 1.0),
    ]
    assert schedule.list_schedule(jobs, slots=3, config=config) == 20 + 4 + 1
    assert schedule.list_schedule(jobs, slots=1, config=config) == 10 + 20 + 3 * 4 + 5 + 1
    other_model = [("evaluate", {"model": "other", "dataset": "d", "stage": "finetuned-s13"}, 3.0)]
    assert schedule.list_schedule(jobs[:1] + other_model, slots=2, config=config) == 10.0  # not waited for
    independent = [("prepare", {"dataset": str(index)}, 5.0) for index in range(4)]
    assert schedule.list_schedule(independent, slots=2, config=config) == 10.0
    assert schedule.list_schedule([], slots=2, config=config) == 0.0


def test_every_rule_comes_after_what_it_reads():
    """The rules table is in an order the schedule can take jobs in: every rule after the rules it reads."""
    names = workflow_rules.RULE_NAMES
    assert len(set(names)) == len(names)
    for position, rule in enumerate(workflow_rules.RULES):
        assert all(names.index(upstream) < position for upstream in rule.reads), rule.name
    order = schedule.STAGE_ORDER
    assert set(order) == set(WORK) and set(WORK) <= set(names)
    for rule in order:
        assert all(order.index(upstream) < order.index(rule) for upstream in schedule.upstream(rule)), rule


def test_the_cost_models_jobs_have_the_tables_wildcards():
    """Every compute job names its rule's wildcards; each rule's runs are the ones the workflow gives it."""
    shipped = validate_schema(load_yaml(REPO / "config.yaml"), "config.yaml")
    jobs = predict.study_jobs(shipped)
    assert set(jobs) == set(WORK) - {"verdict_curve", "import_onnx", "sae_sweep"}  # none in the default study
    breadth = validate_schema(load_yaml(REPO / "configs/breadth.yaml"), "breadth.yaml")
    assert set(predict.study_jobs(breadth)) == set(WORK)  # the breadth study runs every compute rule
    assert len(predict.study_jobs(breadth)["import_onnx"]) == 1  # only the package model is imported
    assert [job["layer"] for job in predict.study_jobs(breadth)["verdict_curve"]] == ["1", "2", "3"]
    for config in (shipped, breadth):
        for rule, rule_jobs in predict.study_jobs(config).items():
            expected = set(workflow_rules.rule_named(rule).wildcards)
            assert all(set(wildcards) == expected for wildcards in rule_jobs), rule

    def values(rule: str, *keys: str) -> set:
        return {tuple(job[key] for key in keys) for job in jobs[rule]}

    finetuned = {(run,) for run in targets.finetuned_runs(shipped)}
    assert values("finetune", "stage") == values("evaluate", "stage") == finetuned
    assert (
        values("extract", "stage")
        == values("train_sae", "stage")
        == {(run,) for run in targets.runs(shipped)}
    )
    assert values("diff", "reference", "compared") == set(targets.comparisons(shipped))
    assert len(jobs["diff"]) == len(set(map(frozenset, (job.items() for job in jobs["diff"]))))  # no repeats


def test_a_study_with_few_long_jobs_is_predicted_slower_than_its_cpu_over_the_cores(tmp_path):
    """One model x one dataset: the fine-tune runs alone, so the wall time exceeds CPU seconds / cores."""
    two = predict.predict_study(study(tmp_path), tmp_path / "results", cores=2)
    assert two["wall_s_local"] > two["cpu_s_total"] / 2
    many = predict.predict_study(study(tmp_path), tmp_path / "results", cores=64)
    assert many["cpu_s_total"] / 64 < many["wall_s_local"] < two["wall_s_local"]
