"""A whole study's configuration checked before any job: the schema (with its defaults), then what the schema
cannot express (split sums, files and columns, model depth and lengths, offline hub ids), each failure one line.
It sits above every subpackage because its checks use the data and model layers.

Every message names the config file and the dotted key (``config.yaml: models.minilm.sae_layers[2]: ...``).
"""

from __future__ import annotations

import math
from pathlib import Path

from layershift.core.errors import ConfigError, LayershiftError
from layershift.study import targets
from layershift.study.schema import did_you_mean, load_yaml, validate_schema


def check_semantics(config: dict, origin: str, base_dir: str | Path = ".") -> None:
    """Checks the schema can't express: split sums, files, columns, layer depth, offline hub ids."""
    split = config["data"]["split"]
    total = sum(split.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"{origin}: data.split: fractions must sum to 1, got {total:g} ({split})")
    for name, dataset in config["datasets"].items():
        if name in RESERVED_DATASET_NAMES:
            raise ConfigError(
                f"{origin}: datasets: name {name!r} is reserved (results/models/<model>/{name} holds the "
                "model's own files, where a fine-tuned model would go); rename the dataset"
            )
        _check_dataset(name, dataset, origin, Path(base_dir), config)
    for name, model in config["models"].items():
        _check_model(name, _rebased(model, Path(base_dir)), origin, config["finetune"]["max_length"])
    _check_sweep(config.get("sae_sweep", {}), config, origin)
    _check_verdict_curve(config.get("verdict_curve"), config, origin)
    _check_replicates(config["replicates"], config, origin)
    _check_widths(config, origin)
    _check_palette(config["figures"]["palette"], origin)


# names under results/models/<model>/ beside the fine-tuned models' results/models/<model>/<dataset>/: a dataset
# so named made Snakemake's DAG fail (AmbiguousRuleException with import_onnx, ChildIOException with the pointer)
RESERVED_DATASET_NAMES = frozenset(
    Path(template).name for template in (targets.ONNX_IMPORT, targets.PRETRAINED)
)

SEABORN_NAMED_PALETTES = {
    f"{name}{n}" for name in ("deep", "muted", "pastel", "bright", "dark", "colorblind") for n in ("", "6")
}


def _check_palette(palette: str, origin: str) -> None:
    """A palette name seaborn knows (the figure jobs, the study's last step, would fail on it after every
    other job); seaborn is imported only for a name outside its own named palettes."""
    if palette in SEABORN_NAMED_PALETTES:
        return
    import seaborn

    try:
        seaborn.color_palette(palette)
    except (ValueError, KeyError):
        raise ConfigError(
            f"{origin}: figures.palette: {palette!r} is not a seaborn or matplotlib palette name "
            "(e.g. 'colorblind', 'deep', 'viridis', 'tab10')"
        ) from None


def _rebased(model: dict, base_dir: Path) -> dict:
    """A model entry whose relative ``path:`` sources (model, onnx tokenizer) are relative to ``base_dir``, as
    relative data files are: the workflow runs in that directory."""
    rebased = dict(model)
    for key in ("source", "tokenizer"):
        value = model.get(key)
        if isinstance(value, str) and value.startswith("path:") and not Path(value[5:]).is_absolute():
            rebased[key] = f"path:{base_dir / value[5:]}"
    return rebased


def _check_widths(config: dict, origin: str) -> None:
    """Latent counts the dictionaries need (the SAE and crosscoder configs raise on them inside a job, after
    fine-tuning and extraction): TopK's k and the crosscoder's k and shared latents within the width."""
    sae = config["sae"]
    for where, entry in [("sae", sae)] + [
        (f"sae_sweep.grid[{i}]", {**sae, **g}) for i, g in enumerate(config["sae_sweep"]["grid"])
    ]:
        if entry["architecture"] == "topk" and entry["k"] > entry["d_sae"]:
            raise ConfigError(f"{origin}: {where}: k ({entry['k']}) must be at most d_sae ({entry['d_sae']})")
    crosscoder = config["crosscoder"]
    if crosscoder["n_shared"] >= crosscoder["d_latent"]:
        raise ConfigError(
            f"{origin}: crosscoder.n_shared: {crosscoder['n_shared']} shared latents need d_latent > {crosscoder['n_shared']}, "
            f"got d_latent {crosscoder['d_latent']}"
        )
    if crosscoder["architecture"] == "batchtopk" and crosscoder["k"] > crosscoder["d_latent"]:
        raise ConfigError(
            f"{origin}: crosscoder.k: {crosscoder['k']} must be at most d_latent ({crosscoder['d_latent']})"
        )


def _check_sweep(sweep: dict, config: dict, origin: str) -> None:
    """The sweep's model and dataset are entries of the study and its layer one of the model's SAE layers."""
    for key, entries in (("model", config["models"]), ("dataset", config["datasets"])):
        name = sweep.get(key)
        if name is not None and name not in entries:
            known = ", ".join(entries)
            raise ConfigError(f"{origin}: sae_sweep.{key}: {name!r} is not an entry of {key}s ({known})")
    layer = sweep.get("layer")
    model = sweep.get("model") or next(iter(config["models"]))
    layers = config["models"][model]["sae_layers"]
    if layer is not None and layer not in layers:
        raise ConfigError(f"{origin}: sae_sweep.layer: {layer} is not one of {model}'s sae_layers {layers}")


def _check_verdict_curve(curve: dict | None, config: dict, origin: str) -> None:
    """The verdict curve's model and dataset are entries of the study (both named once fractions are given),
    its fractions ascend without repeats, and each stage has a seed null (a verdict needs one)."""
    if not curve:
        return
    fractions = curve.get("fractions") or []
    for key, entries in (("model", config["models"]), ("dataset", config["datasets"])):
        name = curve.get(key)
        if name is None and fractions:
            raise ConfigError(
                f"{origin}: verdict_curve.{key}: name one of the study's {key}s ({', '.join(entries)})"
            )
        if name is not None and name not in entries:
            raise ConfigError(
                f"{origin}: verdict_curve.{key}: {name!r} is not an entry of {key}s{did_you_mean(name, entries, key + 's')}"
            )
    if len(set(fractions)) != len(fractions):
        repeated = sorted({fraction for fraction in fractions if fractions.count(fraction) > 1})
        raise ConfigError(f"{origin}: verdict_curve.fractions: {repeated[0]:g} is listed twice")
    if fractions != sorted(fractions):
        raise ConfigError(
            f"{origin}: verdict_curve.fractions: {fractions} must ascend (write {sorted(fractions)})"
        )
    if fractions and config["sae"]["null_seeds"] < 1:
        raise ConfigError(
            f"{origin}: verdict_curve: a verdict needs each stage's seed null; set sae.null_seeds ≥ 1 (it is 0)"
        )


def _check_replicates(replicates: dict, config: dict, origin: str) -> None:
    """Replicate seeds are distinct, and a between-run baseline that is asked for has two replicates to compare
    and the seed nulls its diff pairs them with."""
    seeds = replicates.get("seeds") or []
    repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if repeated:
        raise ConfigError(
            f"{origin}: replicates.seeds: seed {repeated[0]} is listed twice (a replicate is one seed)"
        )
    if replicates.get("between_runs") is not True:
        return
    if len(seeds) < 2:
        raise ConfigError(
            f"{origin}: replicates.between_runs: a between-run baseline needs two or more replicates.seeds "
            f"(the study has {len(seeds) or 1} fine-tuning run{'s' if len(seeds) > 1 else ''})"
        )
    if config["sae"]["null_seeds"] < 1:
        raise ConfigError(
            f"{origin}: replicates.between_runs: the between-run feature diff needs each replicate's seed null; "
            "set sae.null_seeds ≥ 1 (it is 0)"
        )


CONTENT_CHECK_MAX_BYTES = 50 * 2**20  # larger files are content-checked by the (cheap, local) prepare job


def _names_a_local_path(source: str, base_dir: Path) -> bool:
    """Whether a bare source that is no existing file still reads as a local path: absolute, ``./`` or ``~``,
    more than one '/', or a first part that is a local directory (``data/typo.csv`` where ``data/`` exists)."""
    if source.startswith(("hub:", "package-file:")):
        return False
    path = Path(source)
    if path.is_absolute() or source.startswith(("./", "../", "~")) or source.count("/") > 1:
        return True
    return "/" in source and (base_dir / path.parts[0]).is_dir()


def _check_dataset(name: str, dataset: dict, origin: str, base_dir: Path, config: dict) -> None:
    """A dataset's probes, source, columns and rows: what its prepare job would fail on, checked now."""
    from layershift.data import sources

    key, source = f"datasets.{name}", dataset["source"]
    _check_probes(dataset, key, origin)
    path = _dataset_file(source, key, origin, base_dir)
    if path is None:
        return  # a hub dataset: checked when the prepare job downloads it (hub access may need the network)
    shown = source if sources.is_package_file_source(source) else None  # else the path it resolved to
    try:
        frame = sources.read_file(path, dataset.get("encoding_errors", "strict"), origin=shown)
    except LayershiftError as err:
        raise ConfigError(f"{origin}: {key}.source: {err}") from None
    columns = {"text": dataset["text"], "label": dataset["label"]}
    if "min_quality" in dataset:
        columns["min_quality.column"] = dataset["min_quality"]["column"]
    for field, column in columns.items():
        if column not in frame.columns:
            hint = did_you_mean(column, frame.columns, what="columns")
            raise ConfigError(f"{origin}: {key}.{field}: column {column!r} not in {source}{hint}")
    if path.stat().st_size <= CONTENT_CHECK_MAX_BYTES:
        _check_rows(frame, dataset, key, origin, config)


def _check_probes(dataset: dict, key: str, origin: str) -> None:
    from layershift.data.cleaning import clean_text

    cleaning = dataset.get("cleaning", "paper")
    for i, probe in enumerate(dataset.get("probes") or []):
        if not clean_text(str(probe), cleaning):
            raise ConfigError(
                f"{origin}: {key}.probes[{i}]: {probe!r} is empty after cleaning ({cleaning!r}): no token of"
                " it would reach the SAEs"
            )


def _dataset_file(source: str, key: str, origin: str, base_dir: Path) -> Path | None:
    """The local file a dataset reads (a package file resolved and checked against its RECORD); None for a
    hub dataset."""
    from layershift.data import sources

    if sources.is_package_file_source(source):
        try:
            return sources.resolve_package_file(source).location
        except LayershiftError as err:
            raise ConfigError(f"{origin}: {key}.source: {err}") from None
    if sources.is_hub_source(source):
        # a misspelt file, not a hub id ('name' or 'namespace/name')
        if _names_a_local_path(source, base_dir):
            raise ConfigError(
                f"{origin}: {key}.source: file {source!r} does not exist (a hub dataset id has no directory "
                f"part; write 'hub:{source}' if it is one)"
            )
        return None
    path = Path(source) if Path(source).is_absolute() else base_dir / source
    if path.suffix.lower() not in sources.FILE_READERS:
        raise ConfigError(
            f"{origin}: {key}.source: {source!r} is neither a hub id nor a .csv/.parquet/.jsonl file"
        )
    if not path.is_file():
        raise ConfigError(f"{origin}: {key}.source: file {source!r} does not exist")
    return path


def _check_rows(frame, dataset: dict, key: str, origin: str, config: dict) -> None:
    """Run the failing part of preparation (quality filter, clean, label, size checks) so unusable rows fail
    here, not in a job."""
    from layershift.data import prepare, sources

    min_quality = dataset.get("min_quality")
    quality_column = min_quality["column"] if min_quality else None
    raw = sources.select_columns(frame, dataset["text"], dataset["label"], dataset["source"], quality_column)
    settings = prepare.PrepareConfig(
        max_rows=dataset.get("max_rows", config["data"]["max_rows"]),
        split=config["data"]["split"],
        max_chars=config["data"]["max_chars"],
        seed=config["seed"],
        cleaning=dataset.get("cleaning", "paper"),  # as the prepare job cleans it
        min_quality=min_quality,
    )
    try:
        prepare.labelled_frame(
            raw, settings, origin=dataset["source"], keep_labels=dataset.get("keep_labels")
        )
    except LayershiftError as err:
        raise ConfigError(f"{origin}: {key}: {err}") from None


def _check_model(name: str, model: dict, origin: str, max_length: int) -> None:
    from layershift.models import sources

    key = f"models.{name}"
    if sources.parse_source(model["source"]).kind == "onnx-package":
        try:
            sources.onnx_tokenizer_dir(model)
        except LayershiftError as err:
            raise ConfigError(f"{origin}: {key}.tokenizer: {err}") from None
    elif "tokenizer" in model:
        raise ConfigError(
            f"{origin}: {key}.tokenizer: only onnx-package models take a tokenizer source; this model loads "
            "its tokenizer from its own directory (remove the key)"
        )
    try:
        depth = model_depth(model)
    except LayershiftError as err:
        raise ConfigError(f"{origin}: {key}.source: {err}") from None
    if depth is None:
        return
    problem = sources.max_length_problem(name, max_length, model_max_tokens(model))
    if problem:
        raise ConfigError(f"{origin}: {problem}")
    for i, layer in enumerate(model["sae_layers"]):
        if layer > depth:
            raise ConfigError(
                f"{origin}: {key}.sae_layers[{i}]: layer {layer} is beyond the model's depth "
                f"({depth} layers; valid 0..{depth}, 0 = embeddings)"
            )


def model_depth(model: dict) -> int | None:
    """Number of hidden layers of a configured model, read without loading weights (None if unknown yet)."""
    from layershift.models import sources

    source = sources.parse_source(model["source"])
    if source.kind == "onnx-package":
        return sources.onnx_layer_count(sources.package_file(source.value, ".onnx"))
    model_dir = sources.local_model_dir(source, model.get("revision"))  # the snapshot resolve_model will use
    if model_dir is not None:
        return sources.describe_model(model_dir)["num_hidden_layers"]
    if sources.hub_offline() or not sources.hub_reachable():
        raise ConfigError(sources.offline_message(source.value))
    return None  # a hub model not cached yet: resolve_model downloads it and checks its depth


def model_max_tokens(model: dict) -> int | None:
    """Longest input (tokens) a configured local model's position embeddings allow; None if unknown or unbounded."""
    from layershift.models import sources

    source = sources.parse_source(model["source"])
    if source.kind == "onnx-package":  # imported into a BertModel with the ONNX file's position table
        return sources.onnx_position_count(sources.package_file(source.value, ".onnx"))
    model_dir = sources.local_model_dir(source, model.get("revision"))
    return None if model_dir is None else sources.max_input_tokens(sources.read_model_config(model_dir))


def validate_config(config: dict, origin: str = "config.yaml", base_dir: str | Path = ".") -> dict:
    """Schema (with defaults) + semantic checks. Returns the same dict, completed."""
    validate_schema(config, origin)
    check_semantics(config, origin, base_dir)
    return config


def load_config(path: str | Path, base_dir: str | Path = ".") -> dict:
    return validate_config(load_yaml(path), str(path), base_dir)
