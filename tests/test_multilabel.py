"""Multi-label classification: per-class sigmoid KD and BCE checked against a hand computation and
gradcheck, lists of label names read from JSONL (and a separator in CSV), micro F1 against scikit-learn,
and a run whose exported folder transformers' pipeline scores as the run reported."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers
from sklearn.metrics import f1_score

from distill import losses as loss_registry
from distill.data.files import DataError
from distill.data.labelled import TextFiles, load_text_data
from distill.losses.multilabel import multilabel_bce_loss, sigmoid_kd_loss
from distill.run.export import export_row
from distill.run.recipe import validate_recipe
from distill.run.results import find_row
from distill.run.runner import run_recipe
from distill.tasks.text import multilabel_metric
from tests.hf_models import save_tiny_bert_folder


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_sigmoid_kd_matches_a_hand_computation():
    student = [[0.5, -1.0], [2.0, 0.0]]
    teacher = [[1.0, -2.0], [0.0, 3.0]]
    t = 2.0
    terms = []
    for s_row, t_row in zip(student, teacher, strict=True):
        for zs, zt in zip(s_row, t_row, strict=True):
            p, q = _sigmoid(zt / t), _sigmoid(zs / t)
            terms.append(p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)))
    expected = t * t * sum(terms) / len(terms)
    got = sigmoid_kd_loss(torch.tensor(student), torch.tensor(teacher), temperature=t)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    masked = sigmoid_kd_loss(torch.tensor(student), torch.tensor(teacher), temperature=t, mask=torch.tensor([1, 0]))
    assert float(masked) == pytest.approx(t * t * sum(terms[:2]) / 2, rel=1e-6)
    same = torch.tensor(teacher)
    assert float(sigmoid_kd_loss(same, same, temperature=t)) == pytest.approx(0.0, abs=1e-7)
    assert loss_registry.get("sigmoid_kd") is sigmoid_kd_loss


def test_sigmoid_kd_gradcheck_and_finite_on_extreme_logits():
    torch.manual_seed(0)
    student = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    teacher = torch.randn(3, 4, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda s: sigmoid_kd_loss(s, teacher, temperature=1.5), (student,))
    extreme = sigmoid_kd_loss(torch.tensor([[80.0, -80.0]]), torch.tensor([[-80.0, 80.0]]), temperature=1.0)
    assert float(extreme) == pytest.approx(80.0, rel=1e-3)  # each class: KL ≈ -log σ(-80) = 80, finite


def test_multilabel_hard_loss_is_mean_bce_and_skips_hidden_rows():
    logits = torch.tensor([[1.0, -1.0], [0.5, 0.5], [3.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-100.0, -100.0]])
    values = [
        -math.log(_sigmoid(1.0)),
        -math.log(1 - _sigmoid(-1.0)),
        -math.log(1 - _sigmoid(0.5)),
        -math.log(_sigmoid(0.5)),
    ]
    assert float(multilabel_bce_loss(logits, labels)) == pytest.approx(sum(values) / 4, rel=1e-6)
    assert float(loss_registry.hard_ce_loss(logits, labels)) == pytest.approx(sum(values) / 4, rel=1e-6)
    check = torch.randn(2, 3, dtype=torch.double, requires_grad=True)
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.double)
    assert torch.autograd.gradcheck(lambda z: multilabel_bce_loss(z, target), (check,))


def test_micro_f1_matches_scikit_learn():
    logits = [torch.tensor([[1.0, -1.0, 2.0], [-1.0, 1.0, -3.0]]), torch.tensor([[0.5, 0.5, 0.5]])]
    labels = [torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])]
    predicted = torch.cat(logits) > 0
    gold = torch.cat(labels) > 0.5
    expected = f1_score(gold.int().numpy(), predicted.int().numpy(), average="micro")
    assert multilabel_metric(logits, labels)["f1"] == pytest.approx(expected)


def _jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": text, "label": names}) + "\n" for text, names in rows))
    return path


ROWS = [
    ("goal scored in the final", ["sports"]),
    ("vote on the budget", ["politics"]),
    ("minister opens the stadium", ["politics", "sports"]),
    ("a quiet day", []),
]


def test_lists_of_label_names_and_a_csv_separator_read_as_multi_label(tmp_path):
    data = load_text_data(TextFiles("jsonl", _jsonl(tmp_path / "train.jsonl", ROWS), test=tmp_path / "train.jsonl"))
    assert data.kind == "multilabel" and data.label_names == ["politics", "sports"]
    assert data.train.labels == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    csv = tmp_path / "train.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{'|'.join(n)}\n" for t, n in ROWS))
    from_csv = load_text_data(TextFiles("csv", csv, test=csv, label_separator="|"))
    assert from_csv.kind == "multilabel" and from_csv.train.labels == data.train.labels
    dev = _jsonl(tmp_path / "dev.jsonl", [("x", ["sports"]), ("y", ["weather"])])
    with pytest.raises(DataError, match=r"dev.jsonl:2: label 'weather' is not a label of the training data"):
        load_text_data(TextFiles("jsonl", tmp_path / "train.jsonl", validation=dev))
    mixed = _jsonl(tmp_path / "mixed.jsonl", [("x", ["sports"]), ("y", "sports")])
    with pytest.raises(DataError, match=r"mixed.jsonl:2: label 'sports' is one name but row 1 has a list"):
        load_text_data(TextFiles("jsonl", mixed))


def test_a_multi_label_run_exports_a_folder_the_pipeline_scores_as_reported(tmp_path):
    folder = save_tiny_bert_folder(tmp_path / "teacher")
    train = _jsonl(tmp_path / "train.jsonl", ROWS * 10)
    dev = _jsonl(tmp_path / "dev.jsonl", ROWS * 2)
    settings = {"epochs": 2, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 3e-3}}
    raw = {
        "data": {"format": "jsonl", "train": str(train), "validation": str(dev)},
        "teacher": {"model": {"kind": "hf", "path": folder}, "train": settings},
        "student": {"model": {"kind": "hf", "layers": 1}, "train": settings},
        "distill": {"response_loss": "kd", "temperature": 2.0, "hard_weight": 1.0},
    }
    with pytest.raises(ValueError, match=r"multi-label data: distill.response_loss 'kd' takes a softmax"):
        run_recipe(validate_recipe(raw), raw, tmp_path / "refused", show_progress=False)
    assert not (tmp_path / "refused" / "teacher").exists()  # refused before any training
    raw["distill"]["response_loss"] = "sigmoid_kd"
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    assert results["metric_label"] == "micro F1 (validation)" and results["head"] == "multilabel"

    export_row(tmp_path / "run", tmp_path / "export")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "export")
    assert model.config.problem_type == "multi_label_classification"
    classify = transformers.pipeline(
        "text-classification", model=model, tokenizer=transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    )
    answers = classify([text for text, _ in ROWS * 2], top_k=None)  # sigmoid scores for every label
    names = ["politics", "sports"]
    predicted = [[1 if {a["label"]: a["score"] for a in row}[n] > 0.5 else 0 for n in names] for row in answers]
    gold = [[1 if n in labels else 0 for n in names] for _, labels in ROWS * 2]
    expected = f1_score(gold, predicted, average="micro", zero_division=0)
    assert expected == pytest.approx(find_row(results, "distilled")["score"]["mean"])

    from typer.testing import CliRunner

    from distill.cli import app

    result = CliRunner().invoke(app, ["predict", str(tmp_path / "export"), "--text", ROWS[2][0]])
    assert result.exit_code == 0, result.output
    line = json.loads(next(line for line in result.output.splitlines() if line.startswith("{")))
    chosen = [name for name, p in zip(names, predicted[2], strict=True) if p]
    assert line["labels"] == chosen and sorted(line["probabilities"]) == names
