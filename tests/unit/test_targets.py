"""Runs and seed-null layout: a run is the pretrained model or one fine-tuning replicate; each run's SAE has its
own seed nulls, drawn from one seed set shared by both stages, so every comparison differs in the same seeds."""

import pytest

from layershift.study import targets


def study(null_seeds: int, seeds: list[int] | None = None, between_runs: bool | None = None) -> dict:
    replicates = {"seeds": seeds, "between_runs": between_runs}
    return {"seed": 7, "sae": {"null_seeds": null_seeds}, "replicates": replicates}


def test_each_stage_pairs_with_the_other_stages_seed():
    config = study(1)
    seeds = targets.stage_seeds(config)
    assert seeds == {"pretrained": 7, "finetuned": 1007}
    # each null differs from its stage's SAE in exactly the seeds the cross-stage pair differs in
    assert targets.null_seeds(config, "pretrained") == [seeds["finetuned"]]
    assert targets.null_seeds(config, "finetuned") == [seeds["pretrained"]]
    assert targets.null_seeds(config, "finetuned-s8") == [seeds["pretrained"]]  # a run: its stage's seeds


def test_extra_null_seeds_are_new_and_distinct_per_stage():
    config = study(3)
    for stage in targets.STAGES:
        nulls = targets.null_seeds(config, stage)
        assert len(nulls) == len(set(nulls)) == 3
        assert targets.stage_seeds(config)[stage] not in nulls
    assert targets.null_seeds(study(0), "finetuned") == []


def test_null_dirs_are_numbered_per_run_and_keep_unfilled_wildcards():
    assert targets.null_sae_dirs(study(1), model="m", dataset="d", layer=3) == [
        "results/sae_null/m/d/{stage}/layer3/null0"
    ]
    assert targets.null_sae_dirs(study(2), "finetuned-s8") == [
        "results/sae_null/{model}/{dataset}/finetuned-s8/layer{layer}/null0",
        "results/sae_null/{model}/{dataset}/finetuned-s8/layer{layer}/null1",
    ]
    assert targets.null_sae_dirs(study(0), "pretrained") == []


def test_runs_are_the_pretrained_model_and_one_per_replicate_seed():
    single = study(1)
    assert targets.finetune_seeds(single) == [7]  # no replicates: the study seed alone
    assert targets.finetuned_runs(single) == ["finetuned-s7"]
    assert targets.runs(single) == ["pretrained", "finetuned-s7"] == targets.primary_runs(single)
    three = study(1, seeds=[13, 14, 15])
    assert targets.finetune_seeds(three) == [13, 14, 15]
    assert targets.runs(three) == ["pretrained", "finetuned-s13", "finetuned-s14", "finetuned-s15"]
    assert targets.primary_runs(three) == ["pretrained", "finetuned-s13"]
    assert [targets.run_seed(run) for run in targets.finetuned_runs(three)] == [13, 14, 15]
    assert [targets.stage_of(run) for run in targets.runs(three)] == ["pretrained"] + ["finetuned"] * 3


def test_replicates_are_compared_with_each_other_only_when_there_are_two_and_seed_nulls():
    three = study(1, seeds=[13, 14, 15])
    assert targets.between_runs(three)
    assert targets.comparisons(three) == [
        ("pretrained", "finetuned-s13"),
        ("pretrained", "finetuned-s14"),
        ("pretrained", "finetuned-s15"),
        ("finetuned-s13", "finetuned-s14"),
        ("finetuned-s13", "finetuned-s15"),
        ("finetuned-s14", "finetuned-s15"),
    ]
    kinds = [targets.comparison_kind(*pair) for pair in targets.comparisons(three)]
    assert kinds == [targets.PRETRAINED_VS_FINETUNED] * 3 + [targets.BETWEEN_RUNS] * 3
    for one in (study(1), study(1, seeds=[13]), study(1, seeds=[13], between_runs=True)):
        assert targets.comparisons(one) == [("pretrained", targets.finetuned_runs(one)[0])]
    assert not targets.between_runs(study(0, seeds=[13, 14]))  # no seed nulls to pair their SAEs with
    assert len(targets.comparisons(study(1, seeds=[13, 14], between_runs=False))) == 2


def test_a_runs_saes_are_its_own_then_its_nulls_by_seed():
    config = study(2)
    where = {"model": "m", "dataset": "d", "layer": 3}
    assert targets.run_sae_dirs(config, "pretrained", **where) == {
        7: "results/sae/m/d/pretrained/layer3",
        1007: "results/sae_null/m/d/pretrained/layer3/null0",
        2007: "results/sae_null/m/d/pretrained/layer3/null1",
    }
    assert targets.run_sae_dirs(config, "finetuned-s8", **where) == {
        1007: "results/sae/m/d/finetuned-s8/layer3",
        7: "results/sae_null/m/d/finetuned-s8/layer3/null0",
        2007: "results/sae_null/m/d/finetuned-s8/layer3/null1",
    }


def diff_seeds(config: dict, reference: str, compared: str) -> dict[str, int | None]:
    """The seed of each SAE a diff reads, by role (None: no null)."""
    where = {"model": "m", "dataset": "d", "layer": 3}
    seed_of = {
        directory: seed
        for run in (reference, compared)
        for seed, directory in targets.run_sae_dirs(config, run, **where).items()
    }
    dirs = targets.diff_sae_dirs(config, reference, compared, **where)
    return {role: seed_of.get(directory) for role, directory in dirs.items()}


def test_a_between_run_diff_differs_in_the_seeds_a_pretrained_vs_finetuned_diff_differs_in():
    config = study(1, seeds=[8, 9])
    study_diff = diff_seeds(config, "pretrained", "finetuned-s8")
    assert study_diff == {"reference": 7, "reference_null": 1007, "compared": 1007, "compared_null": 7}
    assert diff_seeds(config, "finetuned-s8", "finetuned-s9") == study_diff
    where = {"model": "m", "dataset": "d", "layer": 3}
    between = targets.diff_sae_dirs(config, "finetuned-s8", "finetuned-s9", **where)
    assert between["reference"].startswith("results/sae_null/m/d/finetuned-s8/")  # its seed-7 SAE: a null
    assert between["compared"] == "results/sae/m/d/finetuned-s9/layer3"
    no_nulls = targets.diff_sae_dirs(study(0), "pretrained", "finetuned-s7", **where)
    assert no_nulls["reference_null"] is None and no_nulls["compared_null"] is None
    with pytest.raises(KeyError):  # without nulls a replicate has no SAE of the pretrained seed
        targets.diff_sae_dirs(study(0, seeds=[8, 9]), "finetuned-s8", "finetuned-s9", **where)


def test_sweep_reads_the_study_saes_of_its_seeds_only_when_a_point_is_the_study_setting():
    config = study(1) | {"sae_sweep": {"grid": [{}, {"lr": 0.1}]}}
    where = {"model": "m", "dataset": "d", "layer": 3}
    assert targets.sweep_seeds(config) == [7, 1007]
    assert targets.sweep_study_saes(config, stage="pretrained", **where) == {
        7: "results/sae/m/d/pretrained/layer3",
        1007: "results/sae_null/m/d/pretrained/layer3/null0",
    }
    assert targets.sweep_study_saes(config, stage="finetuned-s7", **where) == {
        1007: "results/sae/m/d/finetuned-s7/layer3",
        7: "results/sae_null/m/d/finetuned-s7/layer3/null0",
    }
    restated = {**config, "sae": {"null_seeds": 1, "lr": 0.1}, "sae_sweep": {"grid": [{"lr": 0.1}]}}
    assert (
        len(targets.sweep_study_saes(restated, stage="pretrained", **where)) == 2
    )  # the study's value, restated
    no_study_point = {**config, "sae_sweep": {"grid": [{"lr": 0.1}]}}
    assert targets.sweep_study_saes(no_study_point, stage="pretrained", **where) == {}
    no_nulls = study(0) | {"sae_sweep": {"grid": [{}]}}
    assert targets.sweep_study_saes(no_nulls, stage="pretrained", **where) == {
        7: "results/sae/m/d/pretrained/layer3"
    }
