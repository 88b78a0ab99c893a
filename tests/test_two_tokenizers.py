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


def test_teacher_positions_map_each_student_piece_to_the_first_teacher_piece_of_its_word():
    from distill.data.text import teacher_positions

    # student: [CLS] fi ##lm ##s are [SEP] ; teacher: [CLS] films are [SEP]
    assert teacher_positions([None, 0, 0, 0, 1, None], [None, 0, 1, None]) == [0, 1, 1, 1, 2, 3]
    # teacher truncated word 1 away: the student's pieces of it read the teacher's last position ([SEP])
    assert teacher_positions([None, 0, 1, 1, None], [None, 0, None]) == [0, 1, 2, 2, 2]
    # teacher splits a word the student keeps whole: its first piece is the one compared
    assert teacher_positions([None, 0, 1, None], [None, 0, 0, 0, 1, 1, None]) == [0, 1, 4, 6]


def test_a_teacher_reading_its_own_encoding_returns_logits_in_student_positions():
    from distill.core.batch import call_model, reads_teacher_encoding

    class Echo(torch.nn.Module):  # logits = the input ids, as (B, L, 2)
        def forward(self, input_ids, attention_mask):
            return torch.stack([input_ids.float(), -input_ids.float()], dim=-1)

    inputs = {
        "input_ids": torch.tensor([[1, 2, 3, 4]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
        "teacher_input_ids": torch.tensor([[10, 20, 30]]),
        "teacher_attention_mask": torch.ones(1, 3, dtype=torch.long),
        "teacher_positions": torch.tensor([[0, 1, 1, 2]]),
    }
    assert call_model(Echo(), inputs)[0, :, 0].tolist() == [1, 2, 3, 4]  # the student reads its own
    aligned = call_model(reads_teacher_encoding(Echo()), inputs)
    assert aligned.shape == (1, 4, 2) and aligned[0, :, 0].tolist() == [10, 20, 20, 30]


SENTENCES = [
    (["Ann", "lives", "in", "Paris"], ["B-PER", "O", "O", "B-LOC"]),
    (["Bob", "Smith", "saw", "Rome"], ["B-PER", "I-PER", "O", "B-LOC"]),
    (["the", "film", "is", "fine"], ["O", "O", "O", "O"]),
]


def test_tagging_kd_across_tokenizers_compares_word_with_word(tmp_path):
    from seqeval.metrics import f1_score

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"tokens": w, "tags": t}) + "\n" for w, t in SENTENCES * 6))
    raw = _recipe(tmp_path)
    raw["data"] = {"format": "jsonl", "train": str(train), "validation": str(train)}
    raw["teacher"]["train"] = {**raw["teacher"]["train"], "epochs": 12, "optimizer": {"name": "adamw", "lr": 1e-2}}
    task = load_task(validate_recipe(raw))
    batch = task.collate([task.train[i] for i in range(3)])
    assert batch["teacher_positions"].shape == batch["input_ids"].shape  # one teacher position per student piece
    scored = batch["labels"] != -100
    assert int(scored.sum()) == 12  # one scored piece per word, in the student's (letter) encoding

    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    lines = (tmp_path / "run" / "seed-0" / "distilled" / "metrics.jsonl").read_text().splitlines()
    kd = [json.loads(line)["kd"] for line in lines if '"step"' in line and '"kd"' in line]
    assert kd and all(value > 0 for value in kd)

    # the teacher's score, computed independently: its own tokenizer, its own first pieces, seqeval
    names = task.label_names
    assert results["teacher_tokenizer"] == str((tmp_path / "teacher").resolve())
    teacher_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "teacher")
    teacher = transformers.AutoModelForTokenClassification.from_pretrained(
        tmp_path / "teacher", num_labels=len(names), attn_implementation="eager"
    )
    from distill.train.checkpoint import load_module_weights

    load_module_weights(teacher, tmp_path / "run" / "teacher" / "checkpoints" / "epoch-0011")
    teacher.eval()
    predicted = []
    for words, _ in SENTENCES * 6:
        encoded = teacher_tokenizer(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            ids = teacher(**encoded).logits[0].argmax(-1).tolist()
        word_ids = encoded.word_ids(0)
        first = [word_ids.index(w) for w in range(len(words))]
        predicted.append([names[ids[p]] for p in first])
    gold = [tags for _, tags in SENTENCES * 6]
    assert results["teacher"]["score"] > 0.5  # it learnt the tags: the comparison below can fail
    assert results["teacher"]["score"] == pytest.approx(f1_score(gold, predicted))

    export_row(tmp_path / "run", tmp_path / "export")
    tag = transformers.pipeline("token-classification", model=str(tmp_path / "export"))
    assert isinstance(tag("Ann lives in Paris"), list)
