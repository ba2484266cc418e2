"""Before/after evaluation: metric shapes, determinism, the linear probe, and the full report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from layershift.models.batches import encode_texts, make_batches
from layershift.models.classifier import load_classifier, load_tokenizer, predict_logits, save_model
from layershift.models.evaluate import (
    classification_report,
    evaluate_finetuned,
    evaluate_linear_probe,
    evaluate_pretrained_head,
    predict,
)
from layershift.models.metrics import classification_metrics
from tests.support.models import make_tiny_bert

CLASS_WORDS = {
    "positive": ["good", "great", "love", "happy", "fun"],
    "negative": ["bad", "terrible", "hate", "boring", "sad"],
    "music": ["music", "song", "band", "album", "guitar"],
}
LABELS = list(CLASS_WORDS)
FILLER = ["the", "a", "this", "is", "was", "and", "very", "it", "of", "to", "so", "really"]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def labelled_split(n: int, seed: int) -> pd.DataFrame:
    """``n`` texts of 1-6 filler words plus two words of their class (classes in turn)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % len(LABELS)
        words = [*rng.choice(FILLER, rng.integers(1, 7)), *rng.choice(CLASS_WORDS[LABELS[label]], 2)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return pd.DataFrame(rows, columns=["text", "label"])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    words = [w for ws in CLASS_WORDS.values() for w in ws] + FILLER
    return make_tiny_bert(tmp_path_factory.mktemp("pretrained"), vocab_words=words)


@pytest.fixture(scope="module")
def splits():
    return {"train": labelled_split(150, 0), "test": labelled_split(45, 1)}


def test_classification_metrics_on_a_known_confusion():
    y_true = [0, 0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 1, 1, 1, 1, 1, 0]  # class 2 is never predicted: precision 0, not a warning
    metrics = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 8)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 2, 0]]
    assert metrics["labels"] == ["a", "b", "c"] and metrics["n"] == 8
    assert metrics["per_class"]["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 5)
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 3}
    b_f1 = 2 * (2 / 5) * 1.0 / (2 / 5 + 1.0)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + b_f1 + 0.0) / 3)
    json.dumps(metrics)  # plain Python types only


def test_pretrained_head_is_deterministic_and_well_shaped(pretrained, splits):
    test = splits["test"]
    first = evaluate_pretrained_head(pretrained, test, LABELS, seed=5, device="cpu")
    assert first == evaluate_pretrained_head(pretrained, test, LABELS, seed=5, device="cpu")
    assert_metrics_shape(first, len(test))
    # the seed decides the head
    heads = [load_classifier(pretrained, LABELS, seed).classifier.weight for seed in (5, 5, 6)]
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_linear_probe_beats_chance_on_separable_data(pretrained, splits):
    metrics = evaluate_linear_probe(pretrained, splits["train"], splits["test"], LABELS, seed=0, device="cpu")
    assert_metrics_shape(metrics, len(splits["test"]))
    assert metrics["accuracy"] >= 0.8  # chance is 1/3
    again = evaluate_linear_probe(pretrained, splits["train"], splits["test"], LABELS, seed=0, device="cpu")
    assert again == metrics


def test_report_rows_agree_with_each_other(pretrained, splits, tmp_path):
    # a "fine-tuned" model that is the pretrained encoder + the seed-7 head must score like the pretrained row
    finetuned = tmp_path / "finetuned"
    save_model(load_classifier(pretrained, LABELS, seed=7), load_tokenizer(pretrained), finetuned)
    report = classification_report(
        pretrained, finetuned, splits["train"], splits["test"], LABELS, seed=7, device="cpu"
    )
    assert set(report) == {"pretrained", "linear_probe", "finetuned", "n_test", "label_names"}
    assert report["n_test"] == len(splits["test"]) and report["label_names"] == LABELS
    assert report["finetuned"] == report["pretrained"]
    assert report["finetuned"] == evaluate_finetuned(finetuned, splits["test"], LABELS, device="cpu")
    for row in ("pretrained", "linear_probe", "finetuned"):
        assert_metrics_shape(report[row], len(splits["test"]))
    json.dumps(report)


def test_batched_inference_keeps_input_order(pretrained, splits, tmp_path):
    finetuned = tmp_path / "finetuned"
    model, tokenizer = load_classifier(pretrained, LABELS, seed=1).eval(), load_tokenizer(pretrained)
    save_model(model, tokenizer, finetuned)
    texts = splits["test"]["text"].tolist()
    with torch.no_grad():  # one text at a time, no padding: the reference
        reference = np.stack([model(**tokenizer(t, return_tensors="pt")).logits[0].numpy() for t in texts])
    batches = make_batches(encode_texts(tokenizer, texts, max_length=128), batch_size=7)  # length-sorted
    np.testing.assert_allclose(predict_logits(model, batches, torch.device("cpu")), reference, atol=1e-5)
    expected = reference.argmax(axis=1)
    assert np.array_equal(predict(model, texts, batch_size=7, tokenizer=tokenizer, device="cpu"), expected)
    assert np.array_equal(predict(finetuned, texts, batch_size=64, device="cpu"), expected)


def test_finetuned_dir_with_wrong_label_count_is_rejected(pretrained, splits, tmp_path):
    finetuned = tmp_path / "binary"
    save_model(load_classifier(pretrained, ["x", "y"], seed=0), load_tokenizer(pretrained), finetuned)
    with pytest.raises(ValueError, match="2 classes"):
        evaluate_finetuned(finetuned, splits["test"], LABELS, device="cpu")


def assert_metrics_shape(metrics: dict, n_test: int) -> None:
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "labels"} <= set(metrics)
    assert list(metrics["per_class"]) == LABELS
    for entry in metrics["per_class"].values():
        assert set(entry) == {"precision", "recall", "f1", "support"}
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (len(LABELS), len(LABELS)) and matrix.sum() == n_test
    assert matrix.sum(axis=1).tolist() == [e["support"] for e in metrics["per_class"].values()]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["accuracy"] == pytest.approx(
        np.trace(matrix) / n_test
    )


def test_classification_figure_keeps_the_per_class_panel_readable_with_long_class_names(tmp_path):
    """20 classes named by 60-character strings: the tick labels take their own room, the per-class heatmap
    keeps its width (it was squeezed to under an inch, its three columns' numbers printed over each other)."""
    import matplotlib.pyplot as plt

    from layershift.report import figures

    names = [
        f"category number {i} with a very long descriptive label {'x' * (i % 7)}".ljust(60) for i in range(20)
    ]
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 20, 200)
    metrics = classification_metrics(y_true, np.where(rng.random(200) < 0.6, y_true, 0), names)
    path = tmp_path / "classification.json"
    path.write_text(json.dumps({"finetuned": metrics, "label_names": names}))
    fig = figures.plot_classification([path], {"model": "m", "dataset": "d"}, {})
    report_axis = fig.axes[0]
    assert report_axis.get_title() == "per-class report"
    assert report_axis.get_position().width * fig.get_figwidth() >= 3.0  # inches for three score columns
    plt.close(fig)
