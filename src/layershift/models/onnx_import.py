"""Import a BERT encoder shipped only as an ONNX graph into a verified Hugging Face ``BertModel`` directory.

Parameters are recovered from the graph, not from node names: embeddings, LayerNorms and biases are named
initializers (possibly behind ``Identity`` aliases when the exporter de-duplicated equal tensors); each linear
weight is the anonymous ``MatMul`` (or ``Gemm``) operand whose output is added to a named ``*.bias``. The import
is proven by running onnxruntime on the original graph, with every layer's hidden state exposed as an extra
output, against the saved Hugging Face model on a padded batch, comparing non-padding tokens layer by layer.
Graphs rewritten by onnxruntime's transformer optimizer (fused Attention / SkipLayerNormalization with packed
QKV weights) are not supported and fail loudly.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import AutoTokenizer, BertConfig, BertModel

from layershift.core.io import atomic_dir, write_json

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# the one parameter every BERT graph names; where it sits fixes the prefix of all names (e.g. "bert.")
ANCHOR = "embeddings.word_embeddings.weight"
# op found inside the feed-forward block -> BertConfig.hidden_act
ACTIVATIONS = {"Erf": "gelu", "Tanh": "gelu_new", "Relu": "relu"}
DEFAULT_CHECK_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I absolutely loved this movie; the acting was superb!",
    "Terrible service, cold food, and a 45-minute wait. Never again.",
    "Is it possible to import an ONNX graph into PyTorch?",
    "Paris is the capital of France.",
    "Wow",
    "Café naïve résumé — unicode, accents and symbols: €, ©, 😊.",
    "In 2023, researchers trained sparse autoencoders on the hidden states of fine-tuned transformer encoders "
    "to study how individual features are retained, changed, lost or newly created across layers.",
]


class _Graph:
    """Name-level index of an ONNX graph: producers, consumers and named parameter tensors."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.alias = {name: name for name in self.initializers}  # tensor name -> initializer holding its data
        for node in self.graph.node:  # topological order, so alias chains resolve in one pass
            if node.op_type == "Identity" and node.input[0] in self.alias:
                self.alias[node.output[0]] = self.alias[node.input[0]]
        anchors = [n for n in self.alias if n.endswith(ANCHOR)]
        if len(anchors) != 1:
            raise ValueError(f"expected one tensor named '*{ANCHOR}' in the ONNX graph, found {anchors}")
        self.prefix = anchors[0][: -len(ANCHOR)]  # e.g. "model.0.auto_model." for sentence-transformers
        self.has_pooler = self.prefix + "pooler.dense.bias" in self.alias

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.initializers[self.alias[name]])

    def key(self, name: str) -> str | None:
        """The BertModel state-dict key a named tensor stands for (None if outside the BERT prefix)."""
        return name[len(self.prefix) :] if name in self.alias and name.startswith(self.prefix) else None

    def tensor_named(self, key: str) -> str:
        """The graph tensor name (initializer or Identity alias) of BertModel key ``key``."""
        name = self.prefix + key
        if name not in self.alias:
            raise KeyError(f"ONNX graph has no tensor {name!r}")
        return name

    def constant(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is an initializer or Constant output, else None."""
        if name in self.alias:
            return self.array(name)
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def trailing_shape(self, name: str) -> list[int]:
        """The statically known trailing entries of a shape tensor (a constant or a Concat of parts)."""
        value = self.constant(name)
        if value is not None:
            return [int(v) for v in np.ravel(value)]
        node = self.producer.get(name)
        known: list[int] = []
        for part in reversed(node.input if node is not None and node.op_type == "Concat" else []):
            value = self.constant(part)
            if value is None:
                break
            known = [int(v) for v in np.ravel(value)] + known
        return known


def _linear_weights(g: _Graph) -> dict[str, tuple[np.ndarray, str]]:
    """Linear weights in torch layout ``[out, in]`` with their initializer, keyed by the tied bias's key."""
    weights = {}  # bias tensor name -> (weight [out, in], initializer name)
    for node in g.graph.node:
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[1] in g.alias:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            w = g.array(node.input[1])
            weights[node.input[2]] = (w if trans_b else w.T, g.alias[node.input[1]])
        elif node.op_type == "MatMul":
            w_name, trans = node.input[1], False
            if w_name not in g.alias and getattr(g.producer.get(w_name), "op_type", "") == "Transpose":
                w_name, trans = g.producer[w_name].input[0], True  # Transpose(W[out, in]) feeding the MatMul
            if w_name not in g.alias:
                continue  # activation x activation product (attention scores)
            w = g.array(w_name) if trans else g.array(w_name).T  # ONNX [in, out] -> torch [out, in]
            for add in (n for n in g.consumers[node.output[0]] if n.op_type == "Add"):
                for bias in (i for i in add.input if i in g.alias):
                    weights[bias] = (w, g.alias[w_name])
    keys = {bias: g.key(bias) or "" for bias in weights}
    return {keys[b][: -len("bias")] + "weight": w for b, w in weights.items() if keys[b].endswith(".bias")}


def _num_attention_heads(g: _Graph, hidden: int) -> int:
    """Heads from the first Reshape of layer 0's query projection to ``[batch, seq, heads, head_dim]``."""
    frontier = [n.output[0] for n in g.consumers[g.tensor_named("encoder.layer.0.attention.self.query.bias")]]
    for _ in range(8):  # the split is a few ops downstream of the bias Add
        nodes = [n for t in frontier for n in g.consumers[t]]
        for node in nodes:
            if node.op_type == "Reshape":
                shape = g.trailing_shape(node.input[1])[-2:]  # [heads, head_dim]; heads may be -1
                if len(shape) == 2 and shape[1] > 0 and shape[0] * shape[1] in (-shape[1], hidden):
                    return hidden // shape[1]
        frontier = [out for n in nodes for out in n.output]
    raise ValueError("could not infer num_attention_heads: no [.., heads, head_dim] Reshape after the query")


def _layer_norm_eps(g: _Graph) -> float:
    """Epsilon of the LayerNorms: LayerNormalization attribute, or the constant added before Sqrt."""
    eps = set()
    for node in g.graph.node:
        if node.op_type == "LayerNormalization":
            eps.add(next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5))
        elif node.op_type == "Sqrt" and getattr(g.producer.get(node.input[0]), "op_type", "") == "Add":
            values = [g.constant(i) for i in g.producer[node.input[0]].input]
            eps.update(float(v) for v in values if v is not None and v.size == 1)
    if len(eps) != 1:
        raise ValueError(f"expected one LayerNorm epsilon in the ONNX graph, found {sorted(eps)}")
    return float(str(np.float32(eps.pop())))  # shortest decimal of the float32 value, e.g. 1e-12


def _hidden_act(g: _Graph) -> str:
    """The activation between layer 0's intermediate and output projections."""
    frontier, seen = [g.tensor_named("encoder.layer.0.intermediate.dense.bias")], set()
    for _ in range(12):
        nodes = [n for t in frontier for n in g.consumers[t] if n.op_type not in ("MatMul", "Gemm")]
        seen.update(n.op_type for n in nodes)
        frontier = [out for n in nodes for out in n.output]
    found = [act for op, act in ACTIVATIONS.items() if op in seen]
    if len(found) != 1:
        raise ValueError(f"could not identify the FFN activation from ops {sorted(seen)}")
    return found[0]


def bert_config_from_onnx(model: onnx.ModelProto) -> BertConfig:
    """Infer the ``BertConfig`` of the BERT encoder inside ``model`` from its tensors and graph."""
    g = _Graph(model)
    shape = {g.key(n): list(g.initializers[g.alias[n]].dims) for n in g.alias if g.key(n)}
    layers = {int(m.group(1)) for k in shape if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    if layers != set(range(len(layers))) or not layers:
        raise ValueError(f"encoder layers in the ONNX graph are not 0..n-1: {sorted(layers)}")
    vocab_size, hidden = shape["embeddings.word_embeddings.weight"]
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=_num_attention_heads(g, hidden),
        intermediate_size=shape["encoder.layer.0.intermediate.dense.bias"][0],
        max_position_embeddings=shape["embeddings.position_embeddings.weight"][0],
        type_vocab_size=shape["embeddings.token_type_embeddings.weight"][0],
        layer_norm_eps=_layer_norm_eps(g),
        hidden_act=_hidden_act(g),
    )


def _import_tensors(model: onnx.ModelProto) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Every ``BertModel`` parameter from ``model`` (shape-checked) and the initializers left unused."""
    g = _Graph(model)
    with torch.device("meta"):
        expected = BertModel(bert_config_from_onnx(model), add_pooling_layer=g.has_pooler).state_dict()
    tensors = {g.key(n): (g.array(n), g.alias[n]) for n in g.alias if g.key(n)}  # named tensors as stored
    tensors.update(_linear_weights(g))  # linear weights found through the graph win over same-named tensors
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"ONNX graph lacks {len(missing)} BertModel parameters: {missing}")
    for key, param in expected.items():
        if tuple(tensors[key][0].shape) != tuple(param.shape):
            raise ValueError(f"{key}: ONNX shape {tensors[key][0].shape} != BertModel {tuple(param.shape)}")
    unused = sorted(set(g.initializers) - {tensors[key][1] for key in expected})
    state_dict = {key: torch.from_numpy(np.array(tensors[key][0], dtype=np.float32)) for key in expected}
    return state_dict, unused


def bert_state_dict_from_onnx(model: onnx.ModelProto) -> dict[str, torch.Tensor]:
    """Every ``BertModel`` parameter from ``model``, shape-checked; raises listing any that are missing."""
    state_dict, unused = _import_tensors(model)
    if unused:
        log.warning("%d ONNX initializers not imported into the BertModel: %s", len(unused), unused)
    return state_dict


def _hidden_state_tensors(model: onnx.ModelProto, n_layers: int) -> list[str]:
    """Graph tensors equal to ``hidden_states[0..n]``: the outputs of the embedding and per-layer output LayerNorms."""
    g = _Graph(model)
    keys = [
        "embeddings.LayerNorm.bias",
        *(f"encoder.layer.{i}.output.LayerNorm.bias" for i in range(n_layers)),
    ]
    names = []
    for key in keys:  # the LayerNormalization (or final bias Add of a decomposed one) consuming the bias
        nodes = [n for n in g.consumers[g.tensor_named(key)] if n.op_type in ("LayerNormalization", "Add")]
        if len(nodes) != 1:
            raise ValueError(f"expected one LayerNorm consuming {key}, found {len(nodes)}")
        names.append(nodes[0].output[0])
    return names


def _onnx_hidden_states(model: onnx.ModelProto, names: list[str], feeds: dict[str, np.ndarray]) -> list:
    """Run onnxruntime with ``names`` added as graph outputs; returns their ``[batch, seq, hidden]`` values."""
    import onnxruntime as ort

    outputs, present = model.graph.output, {o.name for o in model.graph.output}
    n_declared = len(outputs)
    outputs.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in present
    )
    try:
        serialized = model.SerializeToString()
    finally:
        del outputs[n_declared:]  # leave the caller's graph as it was
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    dtypes = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
    missing = [i.name for i in session.get_inputs() if i.name not in feeds]
    if missing:
        raise ValueError(f"ONNX inputs {missing} are not produced by the tokenizer ({sorted(feeds)})")
    inputs = {i.name: feeds[i.name].astype(dtypes[i.type]) for i in session.get_inputs()}
    return session.run(names, inputs)


def verify_against_onnx(model: onnx.ModelProto, hf_dir: Path, sentences: list[str]) -> list[float]:
    """Max |ONNX - HF| over non-padding tokens for each ``hidden_states[L]``, L = 0 (embeddings) .. n_layers."""
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    hf = BertModel.from_pretrained(hf_dir, add_pooling_layer=_Graph(model).has_pooler).eval()
    batch = dict(tokenizer(sentences, padding=True, return_tensors="np"))  # [batch, seq] each
    if batch["input_ids"].max() >= hf.config.vocab_size:
        raise ValueError(f"tokenizer produces ids >= vocab_size {hf.config.vocab_size}")
    names = _hidden_state_tensors(model, hf.config.num_hidden_layers)
    onnx_states = _onnx_hidden_states(model, names, batch)
    with torch.no_grad():
        hf_states = hf(**{k: torch.from_numpy(v) for k, v in batch.items()}, output_hidden_states=True)
    real = batch["attention_mask"].astype(bool)  # [batch, seq]
    return [
        float(np.abs(o[real] - h.numpy()[real]).max())
        for o, h in zip(onnx_states, hf_states.hidden_states, strict=True)
    ]


def import_onnx_bert(
    onnx_path: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    check_sentences: list[str] | None = None,
    atol: float = 1e-4,
) -> dict:
    """Convert ``onnx_path`` into a verified HF ``BertModel`` directory ``out_dir``; returns the import report.

    ``out_dir`` (safetensors weights, config, tokenizer files, ``import_report.json``) appears atomically and
    only if every layer's hidden states agree with onnxruntime within ``atol`` on ``check_sentences``.
    """
    onnx_path, tokenizer_dir = Path(onnx_path), Path(tokenizer_dir)
    tokenizer_files = [tokenizer_dir / name for name in TOKENIZER_FILES if (tokenizer_dir / name).exists()]
    if not {"vocab.txt", "tokenizer.json"} & {f.name for f in tokenizer_files}:
        raise FileNotFoundError(f"{tokenizer_dir} has neither vocab.txt nor tokenizer.json")
    model = onnx.load(onnx_path)
    config, has_pooler = bert_config_from_onnx(model), _Graph(model).has_pooler
    state_dict, unused = _import_tensors(model)
    bert = BertModel(config, add_pooling_layer=has_pooler).eval()
    bert.load_state_dict(state_dict, strict=True)
    sentences = check_sentences or DEFAULT_CHECK_SENTENCES
    with atomic_dir(out_dir) as tmp:
        bert.save_pretrained(tmp, safe_serialization=True)
        for path in tokenizer_files:
            shutil.copy2(path, tmp / path.name)
        diffs = verify_against_onnx(model, tmp, sentences)  # reloads what was saved, not the in-memory model
        report = {
            "onnx_path": str(onnx_path),
            "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "tokenizer_dir": str(tokenizer_dir),
            "n_layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size,
            "num_attention_heads": config.num_attention_heads,
            "has_pooler": has_pooler,  # False: AutoModel will initialise a fresh pooler
            "max_abs_diff": diffs,  # index L = hidden_states[L]; 0 is the embedding output
            "atol": atol,
            "n_check_sentences": len(sentences),
            "unused_initializers": unused,
        }
        if max(diffs) > atol:
            raise ValueError(f"ONNX import of {onnx_path} failed verification: max |diff| per layer {diffs}")
        write_json(report, tmp / "import_report.json")
    return report
