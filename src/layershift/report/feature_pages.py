"""One page per stable feature of the primary pair's diff, as compact JSON the report embeds once and its script
renders on demand: the feature's label and partner (decoder cosine, activation correlation), its seed-null
match, its mean activation per class, its causal effect on its run's classifier (attribution for every live
feature, exact ablation where measured, the random control features' median beside it) and its top-activating
test contexts (tokens around the firing one, each token's activation).

Compact: every token string is stored once in a shared list and the contexts point into it; a context keeps
the tokens around its strongest firing, each token's activation as one digit (tenths of the page's top
activation); floats keep four significant digits. A layer is
paged only where its diff has a verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from layershift.core.io import read_json, read_table
from layershift.report.feature_roles import REFERENCE_SIDE, read_diff_labels

SIDES = ("pretrained", "finetuned")
CONTEXTS_PER_PAGE = 5  # top contexts kept per feature page
CONTEXT_TOKENS = 12  # tokens of a context kept around its strongest firing
LEVELS = 10  # shades of a token's activation: one digit per token
PROFILES_SUFFIX = ".profiles.parquet"
FIELDS = (  # one page = one list, in this order
    "group",  # index into groups: model, dataset, layer, verdict, class names, controls
    "side",  # index into SIDES
    "feature",
    "label",
    "match",  # the partner feature on the other side (-1: none)
    "cosine",  # decoder cosine with the partner
    "correlation",  # activation correlation with the partner
    "null_match",
    "null_cosine",
    "null_correlation",
    "firing_rate",
    "class_means",  # mean activation per class (label id order), or null
    "top_class",  # the class it fires most on (-1: unknown)
    "attribution_loss",
    "attribution_logits",  # per class
    "attribution_rank",  # 1 = largest attribution of its SAE's live features
    "ablation_loss",  # exact ablation loss change (null: not ablated)
    "ablation_logits",  # per class, or null
    "random_control",  # a random control feature of the ablation
    "top_tokens",  # indices into strings
    "contexts",  # [[token indices], one digit 0-9 per token (its activation in tenths of the top), label, activation]
    "top_activation",  # the largest activation over the contexts
)


def compact(value: float | None, digits: int = 4) -> float | None:
    """``value`` with ``digits`` significant digits; None for a missing or non-finite one."""
    if value is None or pd.isna(value) or not math.isfinite(float(value)):
        return None
    return float(f"{float(value):.{digits}g}")


@dataclass
class Strings:
    """Every token string of the pages, stored once; a page refers to a string by its index."""

    values: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def of(self, text: str) -> int:
        if text not in self.index:
            self.index[text] = len(self.values)
            self.values.append(text)
        return self.index[text]


def read_profiles(paths: list[str]) -> pd.DataFrame:
    """The feature profiles at ``paths`` (``results/fidelity/{model}/{dataset}/{run}.profiles.parquet``), each
    with its model, dataset and run read from the path where the table has no such column."""
    frames = []
    for path in paths:
        where = Path(path)
        table = read_table(path)
        keys = {
            "model": where.parent.parent.name,
            "dataset": where.parent.name,
            "run": where.name.removesuffix(PROFILES_SUFFIX),
        }
        frames.append(table.assign(**{key: value for key, value in keys.items() if key not in table}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def label_names(card_paths: list[str]) -> dict[str, list[str]]:
    """Each dataset's class names in label-id order, from its card."""
    return {card["dataset"]: list(card["label_names"]) for card in map(read_json, card_paths)}


def _per_class(row: dict, prefix: str, n_classes: int) -> list | None:
    values = [compact(row.get(f"{prefix}{label}")) for label in range(n_classes)]
    return None if all(value is None for value in values) else values


def _window(activations: list[float]) -> slice:
    """The ``CONTEXT_TOKENS`` positions around the largest activation (shifted to stay inside the context)."""
    peak = max(range(len(activations)), key=activations.__getitem__) if activations else 0
    start = max(0, min(peak - CONTEXT_TOKENS // 2, len(activations) - CONTEXT_TOKENS))
    return slice(start, start + CONTEXT_TOKENS)


def _contexts(contexts, strings: Strings) -> tuple[list, float | None]:
    """The top contexts as compact lists and their largest activation: per context the token indices, one
    digit per token (its activation in tenths of the page's top, 9 = the top) as a string, the label id and the
    context's largest activation."""
    contexts = list(contexts)[:CONTEXTS_PER_PAGE] if hasattr(contexts, "__len__") else []  # NaN: no profile
    top = max((max(map(float, context["activations"]), default=0.0) for context in contexts), default=0.0)
    out = []
    for context in contexts:
        activations = [float(value) for value in context["activations"]]
        window = _window(activations)
        levels = "".join(
            str(min(LEVELS - 1, round((LEVELS - 1) * max(value, 0.0) / top))) if top > 0 else "0"
            for value in activations[window]
        )
        tokens = [strings.of(str(token)) for token in list(context["tokens"])[window]]
        out.append([tokens, levels, int(context["label"]), compact(context["activation"])])
    return out, (compact(top) if contexts else None)


def _page(group: int, row: dict, n_classes: int, strings: Strings) -> list:
    """One feature's page as the list :data:`FIELDS` names."""
    class_means = _per_class(row, "mean_activation_class_", n_classes)
    known = [value if value is not None else -math.inf for value in class_means or []]
    top_class = known.index(max(known)) if known and max(known) > -math.inf else -1
    contexts, top_activation = _contexts(row.get("contexts"), strings)
    ablated = bool(row.get("ablated")) if pd.notna(row.get("ablated")) else False
    tokens = row.get("top_tokens")
    values = {
        "group": group,
        "side": SIDES.index(row["side"]),
        "feature": int(row["feature"]),
        "label": row["label"],
        "match": int(row["match"]),
        "cosine": compact(row.get("cosine")),
        "correlation": compact(row.get("activation_correlation")),
        "null_match": int(row.get("null_match", -1)),
        "null_cosine": compact(row.get("null_cosine")),
        "null_correlation": compact(row.get("null_correlation")),
        "firing_rate": compact(row.get("firing_rate")),  # on the test split
        "class_means": class_means,
        "top_class": top_class,
        "attribution_loss": compact(row.get("attribution_loss")),
        "attribution_logits": _per_class(row, "attribution_logit_", n_classes),
        "attribution_rank": None if pd.isna(row.get("attribution_rank")) else int(row["attribution_rank"]),
        "ablation_loss": compact(row.get("ablation_loss_delta")) if ablated else None,
        "ablation_logits": _per_class(row, "ablation_logit_delta_", n_classes) if ablated else None,
        "random_control": bool(row.get("random_control")) if pd.notna(row.get("random_control")) else False,
        "top_tokens": [strings.of(str(token)) for token in (tokens if tokens is not None else [])],
        "contexts": contexts,
        "top_activation": top_activation,
    }
    return [values[name] for name in FIELDS]


PAIR_KEYS = ["model", "dataset", "run", "layer", "feature"]


def _verdicts(diff_table: pd.DataFrame, reference: str, compared: str) -> dict[tuple, str]:
    """(model, dataset, layer) -> the primary pair's verdict, for the layers whose diff has one."""
    if diff_table.empty or "verdict" not in diff_table:
        return {}
    rows = diff_table
    if "reference" in rows:
        rows = rows[(rows["reference"] == reference) & (rows["compared"] == compared)]
    rows = rows[rows["verdict"].notna()]
    return {
        (row["model"], row["dataset"], int(row["layer"])): str(row["verdict"]) for _, row in rows.iterrows()
    }


def _stable_features(labels: pd.DataFrame, verdicts: dict[tuple, str]) -> pd.DataFrame:
    """The stable live features of the layers with a verdict, each with the run its side reads."""
    keys = zip(labels["model"], labels["dataset"], labels["layer"].astype(int), strict=True)
    with_verdict = pd.Series([key in verdicts for key in keys], index=labels.index, dtype=bool)
    stable = labels[with_verdict & labels["stable"].astype(bool) & labels["live"].astype(bool)]
    run = stable["reference"].where(stable["side"] == REFERENCE_SIDE, stable["compared"])
    return stable.assign(run=run, layer=stable["layer"].astype(int))


def _joined(stable: pd.DataFrame, effects: pd.DataFrame, profiles: pd.DataFrame) -> pd.DataFrame:
    """The stable features with their causal effects (test split) and their profiles, where measured."""
    joined = stable.drop(columns=["firing_rate"], errors="ignore")
    if not effects.empty:
        joined = joined.merge(effects.drop(columns=["stage"], errors="ignore"), on=PAIR_KEYS, how="left")
    if not profiles.empty:
        shown = [column for column in profiles if column.startswith("mean_activation_class_")]
        joined = joined.merge(profiles[[*PAIR_KEYS, *shown, "contexts"]], on=PAIR_KEYS, how="left")
    return joined


def _group_controls(effects: pd.DataFrame, model: str, dataset: str, layer: int, runs: list[str]) -> dict:
    """Per side: live features on the test split and the random control features' median |ablation loss
    change| (the size of removing a feature at random)."""
    controls = {"n_live": [], "random_ablation": []}
    for run in runs:
        rows = effects
        if not effects.empty:
            rows = effects[
                (effects["model"] == model)
                & (effects["dataset"] == dataset)
                & (effects["run"] == run)
                & (effects["layer"] == layer)
            ]
        random = rows.loc[rows["random_control"].astype(bool)] if "random_control" in rows else rows.iloc[:0]
        magnitudes = random["ablation_loss_delta"].abs() if len(random) else pd.Series(dtype=float)
        controls["n_live"].append(int(len(rows)))
        controls["random_ablation"].append(compact(magnitudes.median()))
    return controls


def feature_pages_data(
    diff_paths: list[str],
    diff_table: pd.DataFrame,
    effects: pd.DataFrame,
    profiles: pd.DataFrame,
    names: dict[str, list[str]],
    primary: tuple[str, str],
) -> dict:
    """The pages of every stable feature of the ``primary`` pair (reference, compared run) in each layer whose
    diff has a verdict: ``fields``, ``sides``, ``groups`` (one per model x dataset x layer), ``strings`` and
    ``pages`` (one list per feature, :data:`FIELDS` order)."""
    labels = read_diff_labels(diff_paths)
    if labels.empty:
        return {"fields": list(FIELDS), "sides": list(SIDES), "groups": [], "strings": [], "pages": []}
    labels = labels[(labels["reference"] == primary[0]) & (labels["compared"] == primary[1])]
    verdicts = _verdicts(diff_table, *primary)
    joined = _joined(_stable_features(labels, verdicts), effects, profiles)
    strings, groups, pages = Strings(), [], []
    for (model, dataset, layer), rows in joined.groupby(["model", "dataset", "layer"], sort=True):
        classes = names.get(dataset, [])
        group = {
            "model": model,
            "dataset": dataset,
            "layer": int(layer),
            "verdict": verdicts[(model, dataset, layer)],
        }
        group |= {"reference": primary[0], "compared": primary[1], "classes": classes}
        groups.append(group | _group_controls(effects, model, dataset, int(layer), list(primary)))
        ordered = rows.assign(side_order=rows["side"].map(SIDES.index)).sort_values(
            ["side_order", "label", "feature"]
        )  # pretrained side first
        pages += [_page(len(groups) - 1, row, len(classes), strings) for row in ordered.to_dict("records")]
    return {
        "fields": list(FIELDS),
        "sides": list(SIDES),
        "groups": groups,
        "strings": strings.values,
        "pages": pages,
    }


def pages_json(data: dict) -> str:
    """``data`` as compact JSON that is safe inside an HTML ``<script>`` element."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return text.replace("</", "<\\/")
