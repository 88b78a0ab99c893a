"""The compress: list on a transformer student: ONNX int8 export with its tokenizer and labels, served by
`distill predict` through ONNX Runtime, scoring what the deployment table reports."""

from __future__ import annotations

import pytest
import transformers

from distill.run.predict import predict
from distill.run.recipe import validate_recipe
from distill.run.runner import run_recipe
from tests.hf_models import save_tiny_bert_folder

ROWS = [("a fine film", "positive"), ("dull and long", "negative"), ("it is a film", "neutral")]


def _text_recipe(tmp_path, compress: list, epochs: int, lr: float) -> dict:
    """A tiny BERT teacher (trained in the run), its 2-layer student and ``compress``, on ROWS."""
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in ROWS * 8))
    settings = {"epochs": epochs, "batch_size": 8, "log_every": 1, "optimizer": {"name": "adamw", "lr": lr}}
    return {
        "data": {"format": "csv", "train": str(train), "validation": str(train)},
        "teacher": {"model": {"kind": "hf", "path": save_tiny_bert_folder(tmp_path / "teacher")}, "train": settings},
        "student": {"model": {"kind": "hf", "layers": 2}, "train": settings, "baseline": False},
        "distill": {"response_loss": "kd", "temperature": 2.0, "hard_weight": 0.5},
        "compress": compress,
    }


def test_a_text_student_pruned_quantised_and_exported_serves_what_the_table_reports(tmp_path):
    raw = _text_recipe(tmp_path, [{"prune": {"amount": 0.3}}, "quantize", "export"], epochs=12, lr=1e-2)
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    export = results["rows"][-1]
    assert export["label"] == "export onnx" and export["details"]["parity"]["agreement"] >= 0.95
    folder = tmp_path / "run/seed-0/compress/03-export"
    assert {"model.onnx", "config.json", "tokenizer.json"} <= {p.name for p in folder.iterdir()}

    answers = list(predict(folder, [text for text, _ in ROWS * 8]))
    accuracy = sum(a["label"] == label for a, (_, label) in zip(answers, ROWS * 8, strict=True)) / len(answers)
    assert accuracy == pytest.approx(export["score"]["mean"])
    assert accuracy > 1 / 3  # it learnt something: the comparison above can fail


def test_structured_pruning_then_recovery_shrinks_the_student_and_exports(tmp_path):
    raw = _text_recipe(
        tmp_path,
        [
            {"prune": {"structure": "ffn", "amount": 0.5}},
            {"distill": {"epochs": 1}},
            {"export": {"format": "hf"}},
            {"prune": {"structure": "heads", "amount": 0.5, "method": "taylor", "batches": 2}},
            {"export": {"format": "hf"}},
        ],
        epochs=2,
        lr=1e-2,
    )
    with pytest.raises(ValueError, match=r"attention heads were pruned \(\[1\] per layer\).*use format onnx"):
        run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    raw["compress"][-1] = "export"
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", resume=True, show_progress=False)
    rows = {row["label"]: row for row in results["rows"]}
    distilled, ffn = rows["student, distilled"], rows["prune 50% of FFN neurons (magnitude)"]
    heads = rows["prune 50% of heads, global (taylor)"]
    assert distilled["parameters"] > ffn["parameters"] > heads["parameters"]
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "run/seed-0/compress/03-export")
    assert loaded.config.intermediate_size == 16 and rows["export hf"]["details"]["parity"]["max_abs_diff"] < 1e-4
    assert rows["export onnx"]["details"]["parity"]["agreement"] >= 0.99


def test_trimmed_vocabulary_gives_the_same_pieces_and_outputs_on_training_texts(tmp_path):
    import torch

    from distill.compress.vocab import kept_ids, trim_embeddings, trimmed_tokenizer
    from distill.models.hf.loading import packaged_minilm_path
    from tests.hf_models import tiny_config

    old = transformers.AutoTokenizer.from_pretrained(packaged_minilm_path())
    texts = ["a fine film , unforgettable", "dull and long", "it is a film"]
    from collections import Counter

    counts = Counter(i for row in old(texts)["input_ids"] for i in row)
    ids = kept_ids(old, counts, 1, keep_characters=True)
    new = trimmed_tokenizer(old, ids)
    assert len(new) == len(ids) < 2500 < len(old)
    renumber = {old_id: position for position, old_id in enumerate(ids)}
    for text in texts:
        assert new(text)["input_ids"] == [renumber[i] for i in old(text)["input_ids"]]
    assert new.convert_ids_to_tokens(new("zyzzyva")["input_ids"])[1:-1] == list("z") + [f"##{c}" for c in "yzzyva"]

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(tiny_config(vocab_size=len(old))).eval()
    before = model(**old(texts, padding=True, return_tensors="pt")).logits
    trim_embeddings(model, ids, new.pad_token_id)
    after = model(**new(texts, padding=True, return_tensors="pt")).logits
    assert torch.allclose(before, after, atol=1e-6) and model.config.vocab_size == len(ids)


def test_trim_vocab_in_a_recipe_shrinks_the_student_and_its_export_serves_with_the_new_tokenizer(tmp_path):
    raw = _text_recipe(
        tmp_path, ["trim_vocab", {"distill": {"epochs": 1, "teacher": "teacher"}}, "export"], epochs=12, lr=1e-2
    )
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    rows = {row["label"]: row for row in results["rows"]}
    distilled, trimmed = rows["student, distilled"], rows["trim vocabulary to the training texts"]
    assert trimmed["parameters"] < 0.2 * distilled["parameters"]  # the 30,522-row embedding was most of it
    assert trimmed["score"] == distilled["score"]  # the same pieces on these texts: the same predictions
    folder = tmp_path / "run/seed-0/compress/03-export"
    answers = list(predict(folder, [text for text, _ in ROWS * 8]))
    accuracy = sum(a["label"] == label for a, (_, label) in zip(answers, ROWS * 8, strict=True)) / len(answers)
    assert accuracy == pytest.approx(rows["export onnx"]["score"]["mean"])
    assert len(transformers.AutoTokenizer.from_pretrained(folder)) < 2500
