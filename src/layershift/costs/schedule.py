"""A study's compute jobs list-scheduled on a number of one-thread slots, as a greedy scheduler runs them:
each job waits for the jobs of the rules it reads (the workflow's rules table, :mod:`layershift.study.rules`)
that produce the runs it reads."""

from __future__ import annotations

import functools

from layershift.costs.work import COMPUTE_RULES
from layershift.study import rules as workflow_rules
from layershift.study import targets

# Compute rules in the rules table's order: every rule after those it waits for.
STAGE_ORDER = tuple(name for name in workflow_rules.RULE_NAMES if name in COMPUTE_RULES)
RUN_WILDCARDS = frozenset({"stage", "reference", "compared"})


@functools.cache
def upstream(rule: str) -> tuple[str, ...]:
    """The compute rules whose jobs a job of ``rule`` waits for (through light rules such as resolve_model)."""
    return workflow_rules.nearest_reads(rule, COMPUTE_RULES)


def runs_of(config: dict, rule: str, wildcards: dict) -> frozenset[str] | None:
    """The runs a job reads or writes: its own run (``stage``), its comparison's two, the primary pair for a
    rule that reads only that pair, or None for a job of no run (prepare, import_onnx)."""
    if "stage" in wildcards:
        return frozenset({wildcards["stage"]})
    if "reference" in wildcards:
        return frozenset({wildcards["reference"], wildcards["compared"]})
    if workflow_rules.rule_named(rule).primary_pair:
        return frozenset(targets.primary_runs(config))
    return None


def waits_for(config: dict, job: tuple[str, dict], upstream_job: tuple[str, dict]) -> bool:
    """Whether ``job`` (rule, wildcards) waits for ``upstream_job`` of a rule it reads: their model, dataset and
    layer agree where both name them, and the upstream job's runs are among those the job reads (an extract of
    ``finetuned-s14`` waits for that run's fine-tune, the pretrained extract for none; a diff for the SAEs
    and extracts of its two runs, and for the crosscoder only when its runs are the primary pair)."""
    (rule, wildcards), (upstream_rule, upstream_wildcards) = job, upstream_job
    runs, upstream_runs = runs_of(config, rule, wildcards), runs_of(config, upstream_rule, upstream_wildcards)
    if runs is not None and upstream_runs is not None and not upstream_runs <= runs:
        return False
    shared = (wildcards.keys() & upstream_wildcards.keys()) - RUN_WILDCARDS
    return all(wildcards[key] == upstream_wildcards[key] for key in shared)


def list_schedule(jobs: list[tuple[str, dict, float]], slots: int, config: dict) -> float:
    """Makespan of a study's ``(rule, wildcards, seconds)`` jobs on ``slots`` one-thread slots: each job starts
    on the first free slot once everything it waits for (:func:`upstream`, :func:`waits_for`) has finished,
    in DAG order (no look-ahead, as a greedy scheduler runs them). The few long jobs of a small study leave
    slots idle, which ``total / slots`` does not see."""
    done: dict[int, float] = {}  # job index -> finish time
    free = [0.0] * max(1, slots)  # when each slot is next free
    order = sorted(range(len(jobs)), key=lambda index: STAGE_ORDER.index(jobs[index][0]))
    for index in order:
        rule, wildcards, seconds = jobs[index]
        ready = max(
            (
                done[other]
                for other, (up_rule, up_wildcards, _) in enumerate(jobs)
                if up_rule in upstream(rule) and waits_for(config, (rule, wildcards), (up_rule, up_wildcards))
            ),
            default=0.0,
        )
        slot = min(range(len(free)), key=lambda candidate: max(free[candidate], ready))
        done[index] = max(free[slot], ready) + seconds
        free[slot] = done[index]
    return max(done.values(), default=0.0)
