"""A study's compute jobs list-scheduled on a number of one-thread slots, as a greedy scheduler runs them:
each job waits for the jobs of the rules it reads (the workflow's rules table, :mod:`layershift.study.rules`)."""

from __future__ import annotations

import functools

from layershift.costs.work import COMPUTE_RULES
from layershift.study import rules as workflow_rules

# Compute rules in the rules table's order: every rule after those it waits for.
STAGE_ORDER = tuple(name for name in workflow_rules.RULE_NAMES if name in COMPUTE_RULES)


@functools.cache
def upstream(rule: str) -> tuple[str, ...]:
    """The compute rules whose jobs a job of ``rule`` waits for (through light rules such as resolve_model)."""
    return workflow_rules.nearest_reads(rule, COMPUTE_RULES)


def waits_for(wildcards: dict, upstream_rule: str, upstream_wildcards: dict) -> bool:
    """Whether a job waits for a job of an upstream rule: their shared wildcards agree (a fine-tuned extract
    waits for its fine-tune; a pretrained-stage job for no fine-tune, only its dataset's split)."""
    if upstream_rule == "finetune" and wildcards.get("stage") == "pretrained":
        return False
    return all(
        wildcards[key] == upstream_wildcards[key] for key in wildcards.keys() & upstream_wildcards.keys()
    )


def list_schedule(jobs: list[tuple[str, dict, float]], slots: int) -> float:
    """Makespan of ``(rule, wildcards, seconds)`` jobs on ``slots`` one-thread slots: each job starts on the
    first free slot once everything it waits for (:func:`upstream`) has finished, in DAG order (no
    look-ahead, as a greedy scheduler runs them). The few long jobs of a small study leave slots idle, which
    ``total / slots`` does not see."""
    done: dict[int, float] = {}  # job index -> finish time
    free = [0.0] * max(1, slots)  # when each slot is next free
    order = sorted(range(len(jobs)), key=lambda index: STAGE_ORDER.index(jobs[index][0]))
    for index in order:
        rule, wildcards, seconds = jobs[index]
        ready = max(
            (
                done[other]
                for other, (up_rule, up_wildcards, _) in enumerate(jobs)
                if up_rule in upstream(rule) and waits_for(wildcards, up_rule, up_wildcards)
            ),
            default=0.0,
        )
        slot = min(range(len(free)), key=lambda candidate: max(free[candidate], ready))
        done[index] = max(free[slot], ready) + seconds
        free[slot] = done[index]
    return max(done.values(), default=0.0)
