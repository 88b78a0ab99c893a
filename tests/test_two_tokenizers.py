"""A student folder with a tokenizer of its own: each model reads its own encoding of the same texts,
response KD works across them, position-aligned matches are refused before training, and the export
carries the student's tokenizer."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from distill.run.export import export_row
from distill.run.recipe import validate_recipe
from distill.run.results import find_row
from distill.run.runner import run_recipe
from distill.tasks.registry import load_task
from tests.hf_models import save_tiny_bert_folder, save_tiny_char_bert_folder

ROWS = [("a fine film", "positive"), ("dull and long", "negative"), ("it is a film", "neutral")]


def _recipe(tmp_path, **distill):
    train = tmp_path / "train.csv"
    train.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in ROWS * 8))
    settings = {"epochs": 1, "batch_size": 8, "log_every": 1, "optimizer": {"name": "adamw", "lr": 1e-3}}
    teacher, student = save_tiny_bert_folder(tmp_path / "teacher"), save_tiny_char_bert_folder(tmp_path / "student")
    return {
        "data": {"format": "csv", "train": str(train), "validation": str(train)},
        "teacher": {"model": {"kind": "hf", "path": teacher}, "train": settings},
        "student": {"model": {"kind": "hf", "path": student}, "train": settings},
        "distill": {"response_loss": "kd", "temperature": 2.0, "hard_weight": 1.0, **distill},
    }


def test_each_model_reads_its_own_encoding_and_kd_works_across_them(tmp_path):
    raw = _recipe(tmp_path)
    task = load_task(validate_recipe(raw))
    batch = task.collate([task.train[i] for i in range(3)])
    assert task.two_encodings and batch["input_ids"].shape[1] > batch["teacher_input_ids"].shape[1]  # letters
    minilm = transformers.AutoTokenizer.from_pretrained(tmp_path / "teacher")
    assert (
        batch["teacher_input_ids"][0].tolist()[: len(minilm("a fine film")["input_ids"])]
        == (minilm("a fine film")["input_ids"])
    )

    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    lines = (tmp_path / "run" / "seed-0" / "distilled" / "metrics.jsonl").read_text().splitlines()
    kd = [json.loads(line)["kd"] for line in lines if '"step"' in line and '"kd"' in line]
    assert len(kd) == 3 and all(value > 0 for value in kd)  # trained on the teacher's own-encoding logits
    teacher = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "teacher", num_labels=3, attn_implementation="eager"
    )
    from distill.train.checkpoint import load_module_weights

    load_module_weights(teacher, tmp_path / "run" / "teacher" / "checkpoints" / "epoch-0000")
    encoded = minilm([t for t, _ in ROWS * 8], padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = teacher.eval()(**encoded).logits.argmax(-1)
    gold = torch.tensor([["negative", "neutral", "positive"].index(label) for _, label in ROWS * 8])
    assert results["teacher"]["score"] == pytest.approx(float((predicted == gold).float().mean()))

    export_row(tmp_path / "run", tmp_path / "export")
    exported = transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    assert exported.get_vocab() == transformers.AutoTokenizer.from_pretrained(tmp_path / "student").get_vocab()
    classify = transformers.pipeline("text-classification", model=str(tmp_path / "export"))
    answers = [a["label"] for a in classify([t for t, _ in ROWS * 8])]
    accuracy = sum(a == label for a, (_, label) in zip(answers, ROWS * 8, strict=True)) / len(answers)
    assert accuracy == pytest.approx(find_row(results, "distilled")["score"]["mean"])


def test_a_position_aligned_match_across_tokenizers_is_refused_before_training(tmp_path):
    raw = _recipe(tmp_path, matches=[{"student": "hidden:1", "teacher": "hidden:3", "loss": "hidden_mse"}])
    with pytest.raises(ValueError, match=r"hidden:1 <- hidden:3\) pair token positions, but the student tokenises"):
        run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "teacher").exists()
