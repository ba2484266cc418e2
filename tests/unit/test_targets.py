"""Seed-null layout: each stage's SAE has its own seed nulls, drawn from one seed set shared by both stages."""

from layershift.study import targets


def study(null_seeds: int) -> dict:
    return {"seed": 7, "sae": {"null_seeds": null_seeds}}


def test_each_stage_pairs_with_the_other_stages_seed():
    config = study(1)
    seeds = targets.stage_seeds(config)
    assert seeds == {"pretrained": 7, "finetuned": 1007}
    # each null differs from its stage's SAE in exactly the seeds the cross-stage pair differs in
    assert targets.null_seeds(config, "pretrained") == [seeds["finetuned"]]
    assert targets.null_seeds(config, "finetuned") == [seeds["pretrained"]]
    assert targets.null_runs(config) == [("pretrained", 1007), ("finetuned", 7)]


def test_extra_null_seeds_are_new_and_distinct_per_stage():
    config = study(3)
    for stage in targets.STAGES:
        nulls = targets.null_seeds(config, stage)
        assert len(nulls) == len(set(nulls)) == 3
        assert targets.stage_seeds(config)[stage] not in nulls
    assert targets.null_seeds(study(0), "finetuned") == []


def test_null_dirs_follow_the_runs_and_keep_unfilled_wildcards():
    config = study(1)
    assert targets.null_sae_dirs(config, model="m", dataset="d", layer=3) == [
        "results/sae_null/m/d/pretrained/layer3/seed1007",
        "results/sae_null/m/d/finetuned/layer3/seed7",
    ]
    assert targets.null_sae_dirs(config, "finetuned") == [
        "results/sae_null/{model}/{dataset}/finetuned/layer{layer}/seed7"
    ]


def test_sweep_reads_the_study_saes_of_its_seeds_only_when_a_point_is_the_study_setting():
    config = study(1) | {"sae_sweep": {"grid": [{}, {"lr": 0.1}]}}
    where = {"model": "m", "dataset": "d", "layer": 3}
    assert targets.sweep_seeds(config) == [7, 1007]
    assert targets.sweep_study_saes(config, stage="pretrained", **where) == {
        7: "results/sae/m/d/pretrained/layer3",
        1007: "results/sae_null/m/d/pretrained/layer3/seed1007",
    }
    assert targets.sweep_study_saes(config, stage="finetuned", **where) == {
        1007: "results/sae/m/d/finetuned/layer3",
        7: "results/sae_null/m/d/finetuned/layer3/seed7",
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
