"""The workflow's rules as one table: each rule's name, wildcards, whether it runs on a GPU, the rules it reads
and whether it reads only the primary pair of runs.

The cost model, the benchmarks and the cluster tests read this table instead of listing rule names of their own;
``tests/workflow/test_costs_workflow.py`` checks it against the real workflow (``snakemake --list-rules``, ``--rulegraph``, a dry
run's wildcards) and ``tests/workflow/test_slurm.py`` its GPU rules against the cluster profile.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One Snakemake rule of ``workflow/rules/*.smk`` (or the Snakefile's ``all``)."""

    name: str
    wildcards: tuple[str, ...]  # as the rule's output pattern names them, in that order
    # rules whose outputs its jobs read (the edges ``snakemake --rulegraph`` draws)
    reads: tuple[str, ...] = ()
    gpu: bool = False  # runs a model or an SAE: the cluster profile sends it to a GPU partition
    # reads only the primary pair of runs (the pretrained run and the first replicate), though its wildcards
    # name no run
    primary_pair: bool = False


PAIR = ("model", "dataset")
LAYER = ("model", "dataset", "layer")
RUN = ("model", "dataset", "stage")  # one run of a model x dataset: pretrained or finetuned-s<seed>
RUN_LAYER = ("model", "dataset", "stage", "layer")
COMPARISON = ("model", "dataset", "reference", "compared")  # two runs of a model x dataset

FIGURE_RULES = (  # every figure the report embeds and the default target asks for
    "fig_training",
    "fig_classification",
    "fig_accuracy",
    "fig_similarity",
    "fig_depth",
    "fig_sae_loss",
    "fig_relnorm",
    "fig_tokens",
    "fig_sae_sweep",
    "fig_diff",
    "fig_diff_tokens",
    "fig_verdict_curve",
)

# Every rule after the rules it reads; the compute rules in the order the cost model's schedule takes them.
RULES = (
    Rule("prepare", ("dataset",)),
    Rule("import_onnx", ("model",)),
    Rule("resolve_model", ("model",), reads=("import_onnx",)),
    Rule("finetune", RUN, reads=("prepare", "resolve_model"), gpu=True),
    Rule("extract", RUN, reads=("finetune", "prepare", "resolve_model"), gpu=True),
    Rule("evaluate", RUN, reads=("finetune", "prepare", "resolve_model"), gpu=True),
    Rule("probes", PAIR, reads=("finetune", "prepare", "resolve_model"), gpu=True, primary_pair=True),
    Rule("train_sae", RUN_LAYER, reads=("extract",), gpu=True),
    Rule("crosscoder", LAYER, reads=("extract",), gpu=True, primary_pair=True),
    Rule("features", LAYER, reads=("extract", "probes", "train_sae"), gpu=True, primary_pair=True),
    Rule("sae_sweep", RUN_LAYER, reads=("extract", "train_sae"), gpu=True),
    Rule("diff", (*COMPARISON, "layer"), reads=("crosscoder", "extract", "train_sae"), gpu=True),
    Rule("faithfulness", RUN, reads=("finetune", "prepare", "resolve_model", "train_sae"), gpu=True),
    # only in a study whose verdict_curve section names fractions (the tests turn it on to see it)
    Rule("verdict_curve", LAYER, reads=("diff", "extract"), gpu=True, primary_pair=True),
    Rule("similarity", COMPARISON, reads=("extract",)),
    Rule("split_half", PAIR, reads=("extract",)),  # the pretrained run's sentences
    Rule("similarity_table", (), reads=("similarity", "split_half")),
    Rule("accuracy_table", (), reads=("evaluate",)),
    Rule("diff_table", (), reads=("diff",)),
    Rule("feature_summary", (), reads=("diff", "features")),
    Rule("faithfulness_table", (), reads=("faithfulness",)),
    Rule("fig_training", PAIR, reads=("finetune",)),
    Rule("fig_classification", PAIR, reads=("evaluate",)),
    Rule("fig_accuracy", (), reads=("accuracy_table",)),
    Rule("fig_similarity", ("measure", "model"), reads=("similarity",)),  # its model's per-dataset tables
    Rule("fig_depth", ("measure",), reads=("similarity_table",)),
    Rule("fig_sae_loss", PAIR, reads=("train_sae",)),
    Rule("fig_relnorm", PAIR, reads=("crosscoder",)),
    Rule("fig_tokens", LAYER, reads=("features",)),
    Rule("fig_sae_sweep", RUN_LAYER, reads=("sae_sweep",)),
    Rule("fig_diff", ("model",), reads=("diff",)),
    Rule("fig_diff_tokens", PAIR, reads=("diff",)),
    Rule("fig_verdict_curve", PAIR, reads=("verdict_curve",)),
    Rule(
        "report",
        (),
        reads=(
            "prepare",
            "resolve_model",
            "train_sae",
            "sae_sweep",
            "similarity_table",
            "accuracy_table",
            "diff",  # the primary pair's labels, for the feature pages
            "diff_table",
            "feature_summary",
            "faithfulness",  # the primary pair's feature profiles
            "faithfulness_table",
            "verdict_curve",
            *FIGURE_RULES,
        ),
    ),
    Rule(
        "all",
        (),
        reads=(
            "prepare",
            "finetune",
            "evaluate",
            "train_sae",
            "crosscoder",
            "features",
            "sae_sweep",
            "diff",
            "similarity",
            "split_half",
            "similarity_table",
            "accuracy_table",
            "diff_table",
            "feature_summary",
            "faithfulness",
            "faithfulness_table",
            "verdict_curve",
            *FIGURE_RULES,
            "report",
        ),
    ),
)

RULE_NAMES = tuple(rule.name for rule in RULES)
GPU_RULES = frozenset(rule.name for rule in RULES if rule.gpu)
_BY_NAME = {rule.name: rule for rule in RULES}


def rule_named(name: str) -> Rule:
    """The table's entry of rule ``name`` (KeyError names an unknown rule)."""
    if name not in _BY_NAME:
        raise KeyError(f"no workflow rule {name!r}")
    return _BY_NAME[name]


def nearest_reads(name: str, among: frozenset[str] | set[str]) -> tuple[str, ...]:
    """The rules of ``among`` that ``name`` reads, directly or through rules outside ``among`` (the compute
    rules a job waits for, walking through light rules such as ``resolve_model``), in table order."""
    found: set[str] = set()
    todo = list(rule_named(name).reads)
    seen: set[str] = set()
    while todo:
        upstream = todo.pop()
        if upstream in seen:
            continue
        seen.add(upstream)
        if upstream in among:
            found.add(upstream)
        else:
            todo.extend(rule_named(upstream).reads)
    return tuple(rule for rule in RULE_NAMES if rule in found)


def ancestors(name: str) -> frozenset[str]:
    """Every rule whose outputs ``name`` needs, directly or through other rules."""
    seen: set[str] = set()
    todo = list(rule_named(name).reads)
    while todo:
        upstream = todo.pop()
        if upstream not in seen:
            seen.add(upstream)
            todo.extend(rule_named(upstream).reads)
    return frozenset(seen)
