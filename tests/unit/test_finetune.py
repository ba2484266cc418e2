"""Fine-tuning: learning, reloadable output, determinism, resume, atomic output, batching."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from layershift.core.checkpoints import flatten_state, unflatten_state
from layershift.models.batches import Encodings, make_batches
from layershift.models.classifier import SUMMARY_FILE
from layershift.models.evaluate import evaluate_finetuned
from layershift.models.finetune import (
    LOG_COLUMNS,
    FinetuneConfig,
    finetune,
)
from tests.support.models import make_tiny_bert

POSITIVE = ["good", "great", "love", "happy", "fun"]
NEGATIVE = ["bad", "terrible", "hate", "boring", "sad"]
FILLER = ["the", "a", "this", "is", "was", "and", "very", "movie", "film", "it", "of", "to", "plot", "acting"]
LABELS = ["negative", "positive"]
METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr"]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def sentiment_split(n: int, seed: int) -> pd.DataFrame:
    """``n`` texts of 1-5 filler words plus one class word; label 1 = positive word, 0 = negative word."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [*rng.choice(FILLER, rng.integers(1, 6)), rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return pd.DataFrame(rows, columns=["text", "label"])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("pretrained"), vocab_words=POSITIVE + NEGATIVE + FILLER)


@pytest.fixture(scope="module")
def splits():
    return {"train": sentiment_split(160, 0), "val": sentiment_split(40, 1), "test": sentiment_split(40, 2)}


SMALL = FinetuneConfig(
    lr=3e-3, epochs=2, batch_size=16, seed=3
)  # determinism / resume runs: 3 steps an epoch


def test_finetuning_learns_and_writes_a_self_contained_model(pretrained, splits, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    cfg = FinetuneConfig(lr=3e-3, epochs=4, batch_size=4)  # learns within 2-3 epochs for every seed tried
    out = tmp_path / "model"
    log = finetune(pretrained, splits["train"], splits["val"], LABELS, cfg, out, progress=False)

    assert list(log.columns) == LOG_COLUMNS and log["epoch"].tolist() == [1, 2, 3, 4]
    assert log["val_accuracy"].max() >= 0.9  # chance is 0.5
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    assert (log["tokens_per_second"] > 0).all() and (log["lr"].diff().dropna() < 0).all()  # linear decay
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["best_epoch"] == int(log["epoch"][log["val_accuracy"].idxmax()])  # first epoch with max

    # plain from_pretrained, nothing else: recompute test accuracy by hand and compare
    model = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.config.id2label == dict(enumerate(LABELS))
    inputs = tokenizer(splits["test"]["text"].tolist(), padding=True, return_tensors="pt")
    with torch.no_grad():
        pred = model(**inputs).logits.argmax(-1).numpy()
    accuracy = float((pred == splits["test"]["label"].to_numpy()).mean())
    assert evaluate_finetuned(out, splits["test"], LABELS, device="cpu")["accuracy"] == pytest.approx(
        accuracy
    )
    # the saved weights are the best epoch's
    val_accuracy = evaluate_finetuned(out, splits["val"], LABELS, device="cpu")["accuracy"]
    assert val_accuracy == pytest.approx(log["val_accuracy"].max())


def test_same_seed_gives_identical_runs(pretrained, splits, tmp_path):
    train, val = splits["train"].iloc[:48], splits["val"]
    logs = [
        finetune(pretrained, train, val, LABELS, SMALL, tmp_path / f"run{i}", progress=False)
        for i in range(2)
    ]
    pd.testing.assert_frame_equal(logs[0][METRIC_COLUMNS], logs[1][METRIC_COLUMNS])
    assert_same_weights(tmp_path / "run0", tmp_path / "run1")

    other = dataclasses.replace(SMALL, seed=SMALL.seed + 1)
    finetune(pretrained, train, val, LABELS, other, tmp_path / "other", progress=False)
    with pytest.raises(AssertionError):
        assert_same_weights(tmp_path / "run0", tmp_path / "other")


def test_resumed_run_equals_uninterrupted_run(pretrained, splits, tmp_path):
    train, val = splits["train"].iloc[:48], splits["val"]
    straight = finetune(pretrained, train, val, LABELS, SMALL, tmp_path / "straight", progress=False)

    ckpt, out = tmp_path / "ckpt", tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):  # the job is killed right after epoch 1 is checkpointed
        finetune(pretrained, train, val, LABELS, SMALL, out, ckpt, progress=False, callback=kill_after(1))
    assert not out.exists() and not list(tmp_path.glob(".resumed.*"))  # nothing complete-looking
    assert json.loads((ckpt / "epoch-0001" / "checkpoint.json").read_text())["epoch"] == 1

    epochs_run = []
    resumed = finetune(
        pretrained, train, val, LABELS, SMALL, out, ckpt, progress=False, callback=record(epochs_run)
    )
    assert epochs_run == [2]  # epoch 1 came from the checkpoint
    pd.testing.assert_frame_equal(straight[METRIC_COLUMNS], resumed[METRIC_COLUMNS])
    assert_same_weights(tmp_path / "straight", out)
    assert not ckpt.exists()  # removed once the model is written


def test_checkpoint_of_another_config_is_ignored(pretrained, splits, tmp_path, caplog):
    train, val = splits["train"].iloc[:48], splits["val"]
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        finetune(
            pretrained,
            train,
            val,
            LABELS,
            SMALL,
            tmp_path / "a",
            ckpt,
            progress=False,
            callback=kill_after(1),
        )
    other = dataclasses.replace(SMALL, lr=SMALL.lr / 2)
    epochs_run = []
    with caplog.at_level("WARNING"):
        finetune(
            pretrained,
            train,
            val,
            LABELS,
            other,
            tmp_path / "b",
            ckpt,
            progress=False,
            callback=record(epochs_run),
        )
    assert "other settings" in caplog.text
    assert epochs_run == [1, 2]


def test_failed_save_leaves_no_output_dir(pretrained, splits, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    tokenizer_class = type(AutoTokenizer.from_pretrained(pretrained, local_files_only=True))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tokenizer_class, "save_pretrained", fail)
    cfg = FinetuneConfig(lr=1e-3, epochs=1, batch_size=16)
    with pytest.raises(OSError, match="disk full"):
        finetune(
            pretrained,
            splits["train"].iloc[:32],
            splits["val"],
            LABELS,
            cfg,
            tmp_path / "out",
            progress=False,
        )
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary directory left behind either


def test_length_grouped_batches_cover_rows_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=203)
    ids = np.zeros((203, 60), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, 50, size=n)
    enc = Encodings(ids, lengths, np.arange(203) % 3, pad_id=0)

    batches = make_batches(enc, batch_size=16, seed=0, epoch=0, megabatch_mult=4)
    assert sorted(np.concatenate([b.index for b in batches]).tolist()) == list(range(203))
    assert sorted(len(b.index) for b in batches) == [11] + [16] * 12  # ceil(203 / 16) batches
    assert batches[0].input_ids.shape[1] == lengths.max()  # the longest batch comes first
    for b in batches:
        assert b.input_ids.shape[1] == lengths[b.index].max()  # padded only to its own longest row
        assert torch.equal(b.attention_mask.sum(1), torch.from_numpy(lengths[b.index]))
        assert torch.equal(b.labels, torch.from_numpy(enc.labels[b.index]))
        assert torch.equal(b.input_ids, torch.from_numpy(ids[b.index, : b.input_ids.shape[1]]))
    padded = sum(b.input_ids.numel() for b in batches)
    random_padded = sum(lengths[c].max() * len(c) for c in np.array_split(rng.permutation(203), 13))
    assert padded < 0.8 * random_padded

    again = make_batches(enc, batch_size=16, seed=0, epoch=0, megabatch_mult=4)
    assert all(np.array_equal(a.index, b.index) for a, b in zip(batches, again, strict=True))
    next_epoch = make_batches(enc, batch_size=16, seed=0, epoch=1, megabatch_mult=4)
    assert not all(np.array_equal(a.index, b.index) for a, b in zip(batches, next_epoch, strict=True))


def test_state_flattening_round_trips():
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 3)}},
        "groups": [{"betas": (0.9, 0.99)}],
    }
    tensors, skeleton = flatten_state(state)
    back = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert list(back["state"]) == [0] and torch.equal(back["state"][0]["exp_avg"], torch.ones(2, 3))
    assert back["state"][0]["step"].item() == 3.0 and back["groups"][0]["betas"] == (
        0.9,
        0.99,
    )  # tuples stay tuples


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="optimizer"):
        FinetuneConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="warmup_ratio"):
        FinetuneConfig(warmup_ratio=1.0)


def assert_same_weights(dir_a, dir_b) -> None:
    a, b = load_file(dir_a / "model.safetensors"), load_file(dir_b / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def kill_after(epoch: int):
    def callback(done: int, row: dict) -> None:
        if done == epoch:
            raise KeyboardInterrupt

    return callback


def record(epochs: list):
    return lambda done, row: epochs.append(done)


def test_checkpoint_round_trips_best_weights_older_than_the_current_ones(pretrained, splits, tmp_path):
    from layershift.models.batches import encode_split
    from layershift.models.classifier import load_tokenizer
    from layershift.models.finetune import _start_run, load_checkpoint, save_checkpoint

    cpu = torch.device("cpu")
    train = encode_split(load_tokenizer(pretrained), splits["train"], 2, SMALL.max_length)
    run, _ = _start_run(pretrained, LABELS, SMALL, train, cpu, None, "fp")
    run.best_epoch, run.best_accuracy = 1, 0.75
    run.best_state = {
        k: v + 1.0 if v.is_floating_point() else v.clone() for k, v in run.model.state_dict().items()
    }
    run.log = [{"epoch": 1}, {"epoch": 2}]
    save_checkpoint(tmp_path / "ckpt", run, epochs_done=2, fingerprint="fp")
    assert (tmp_path / "ckpt" / "epoch-0002" / "best" / "model.safetensors").is_file()

    fresh, _ = _start_run(pretrained, LABELS, SMALL, train, cpu, None, "fp")
    assert load_checkpoint(tmp_path / "ckpt", fresh, "fp", cpu) == 2
    assert (fresh.best_epoch, fresh.best_accuracy, fresh.log) == (1, 0.75, run.log)
    for key, value in run.best_state.items():
        assert torch.equal(fresh.best_state[key], value), key
    for key, value in run.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[key], value), key
    assert load_checkpoint(tmp_path / "ckpt", fresh, "other", cpu) == 0  # made with other settings
