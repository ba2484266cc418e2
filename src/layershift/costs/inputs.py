"""What a study's inputs look like before anything runs: a model's shape from its config.json (no weights
loaded) and a dataset's rows and tokens per row, measured where the data is here, else bounded by the caps.

Token counts are unknown before ``prepare`` runs: they come from the prepared splits when they exist
(``basis: "prepared"``), else from the local source file (``"source"``), else from the caps
(``max_rows`` x split x ``max_length``; ``"caps"``, an upper bound).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from layershift.study.schema import dataset_row_cap

CHARS_PER_TOKEN = 4.0  # WordPiece on English: about 4 characters per token (+2 for [CLS] and [SEP])

# Shapes of hub models the paper names, for when the model is not in the local cache yet (no download
# at DAG time); anything else not local is assumed to be as large as bert-large (conservative).
# (layers, hidden, intermediate, vocabulary, heads)
KNOWN_SHAPES = {
    "google-bert/bert-base-uncased": (12, 768, 3072, 30522, 12),
    "bert-base-uncased": (12, 768, 3072, 30522, 12),
    "prajjwal1/bert-medium": (8, 512, 2048, 30522, 8),
    "prajjwal1/bert-small": (4, 512, 2048, 30522, 8),
    "prajjwal1/bert-mini": (4, 256, 1024, 30522, 4),
    "prajjwal1/bert-tiny": (2, 128, 512, 30522, 2),
}
FALLBACK_SHAPE = (24, 1024, 4096, 30522, 16)  # bert-large


@dataclass(frozen=True)
class Shape:
    """A BERT-like encoder's sizes, enough to count its parameters and forward FLOPs."""

    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    max_position: int = 512
    basis: str = "config.json"

    @property
    def params(self) -> int:
        hidden, intermediate = self.hidden, self.intermediate
        embeddings = (self.vocab + self.max_position + 2) * hidden + 2 * hidden
        block = (
            4 * hidden * hidden + 4 * hidden + 2 * hidden * intermediate + intermediate + hidden + 4 * hidden
        )
        return embeddings + self.layers * block + hidden * hidden + hidden

    @property
    def params_blocks(self) -> int:
        """Parameters that every token multiplies through (not the embedding lookup)."""
        return self.layers * (4 * self.hidden**2 + 2 * self.hidden * self.intermediate)

    def forward_flop(self, tokens: float, seq: float) -> float:
        """Forward FLOPs of ``tokens`` tokens in sequences of ``seq`` tokens: 2 per weight + attention."""
        return tokens * (2 * self.params_blocks + 4 * self.layers * seq * self.hidden)


def _shape_from_config(model_config: dict, basis: str) -> Shape:
    hidden = int(model_config["hidden_size"])
    return Shape(
        layers=int(model_config["num_hidden_layers"]),
        hidden=hidden,
        intermediate=int(model_config.get("intermediate_size") or 4 * hidden),
        vocab=int(model_config.get("vocab_size") or 30522),
        heads=int(model_config.get("num_attention_heads") or max(1, hidden // 64)),
        max_position=int(model_config.get("max_position_embeddings") or 512),
        basis=basis,
    )


def _onnx_package_shape(package: str, onnx_import_dir: str) -> Shape:
    """The imported config.json, or before the import the ONNX graph's depth with MiniLM-like widths."""
    from layershift.models import sources

    imported = Path(onnx_import_dir) / "config.json"
    if imported.is_file():
        return _shape_from_config(json.loads(imported.read_text()), "imported config.json")
    depth = sources.onnx_layer_count(sources.package_file(package, ".onnx"))
    return Shape(depth, 384, 1536, 30522, 12, basis="onnx depth, assumed width 384")


@functools.lru_cache(maxsize=64)
def _model_shape(source: str, onnx_import_dir: str) -> Shape:
    from layershift.models import sources

    parsed = sources.parse_source(source)
    try:
        if parsed.kind == "onnx-package":
            return _onnx_package_shape(parsed.value, onnx_import_dir)
        if parsed.kind == "hub" and parsed.value in KNOWN_SHAPES:
            local = sources.cached_hub_dir(parsed.value)
            if local is None:
                return Shape(*KNOWN_SHAPES[parsed.value], basis="known hub shape")
        model_dir = sources.local_model_dir(parsed)
        if model_dir is not None:
            return _shape_from_config(sources.read_model_config(model_dir), "config.json")
    except Exception:  # noqa: BLE001 - a cost estimate must never stop the workflow
        pass
    if parsed.kind == "hub" and parsed.value in KNOWN_SHAPES:
        return Shape(*KNOWN_SHAPES[parsed.value], basis="known hub shape")
    return Shape(*FALLBACK_SHAPE, basis="not local: assumed bert-large")


def model_shape(config: dict, model: str, results: str | Path = "results") -> Shape:
    """The shape of a configured model, from its config.json without loading weights (or a stated fallback)."""
    source = config["models"][model]["source"]
    return _model_shape(source, str(Path(results) / "models" / model / "onnx_import"))


@functools.lru_cache(maxsize=64)
def _text_stats(path: str, column: str, kind: str) -> tuple[int, float]:
    """Rows and mean characters per text of a file (csv, json lines or parquet)."""
    import pandas as pd

    if kind == "parquet" or path.endswith(".parquet"):
        texts = pd.read_parquet(path, columns=[column])[column]
    elif path.endswith((".json", ".jsonl")):
        texts = pd.read_json(path, lines=True)[column]
    else:  # bytes that are not UTF-8 are replaced: a length estimate, not the prepared text
        texts = pd.read_csv(path, usecols=[column], encoding_errors="replace")[column]
    lengths = texts.astype(str).str.len()
    return len(texts), float(lengths.mean()) if len(texts) else 0.0


@dataclass(frozen=True)
class DataStats:
    rows: dict  # split -> rows
    tokens_per_row: float  # mean tokens of a row after truncation to finetune.max_length
    basis: str  # "prepared", "source" or "caps"


def dataset_stats(config: dict, dataset: str, results: str | Path = "results") -> DataStats:
    """Rows per split and mean tokens per row of a dataset: measured where the data is here, else bounds.
    ``config`` is validated (``validate_schema`` filled the schema's defaults)."""
    entry = config["datasets"][dataset]
    max_rows = dataset_row_cap(config, dataset)
    split = config["data"]["split"]
    max_length = int(config["finetune"]["max_length"])
    prepared = Path(results) / "data" / dataset
    rows_total, chars, basis = max_rows, None, "caps"
    try:
        if _prepared_for(prepared, entry, max_rows) and all(
            (prepared / f"{name}.parquet").is_file() for name in split
        ):
            rows = {
                name: _text_stats(str(prepared / f"{name}.parquet"), "text", "parquet")[0] for name in split
            }
            chars = _text_stats(str(prepared / "train.parquet"), "text", "parquet")[1]
            return DataStats(rows, _tokens(chars, max_length), "prepared")
        local = _local_source_file(str(entry["source"]))
        if local is not None:
            source_rows, chars = _text_stats(local, entry["text"], "file")
            rows_total, basis = min(max_rows, source_rows), "source"
    except Exception:  # noqa: BLE001 - unreadable here: fall back to the caps
        chars, basis = None, "caps"
    rows = {name: int(round(rows_total * float(fraction))) for name, fraction in split.items()}
    return DataStats(rows, _tokens(chars, max_length) if chars is not None else float(max_length), basis)


def _local_source_file(source: str) -> str | None:
    """The file on this machine behind a dataset source (a path, or a file an installed package ships), or None
    (hub datasets, files not here)."""
    from layershift.data.sources import source_input_files

    files = [path for path in source_input_files(source) if Path(path).is_file()]
    return str(files[0]) if len(files) == 1 else None


def _prepared_for(prepared: Path, entry: dict, max_rows: int) -> bool:
    """Whether ``prepared`` holds this dataset entry's splits: its card names the same source and row cap
    (another config's results may hold a different corpus under the same dataset name)."""
    try:
        card = json.loads((prepared / "card.json").read_text())
    except (OSError, ValueError):
        return False
    return str(card.get("source")) == str(entry["source"]) and int(
        card.get("settings", {}).get("max_rows", -1)
    ) == int(max_rows)


def _tokens(chars: float, max_length: int) -> float:
    return float(min(max_length, chars / CHARS_PER_TOKEN + 2))
