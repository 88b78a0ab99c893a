"""A user's own text files: reading (datasets, CoNLL), checks with one clear sentence, label names,
tag schemes (Resume NER's BMES as shipped), and a 3-class CSV distilled from a recipe."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from typer.testing import CliRunner

from distill.cli import app
from distill.data.files import DataError
from distill.data.labelled import TextFiles, load_text_data
from distill.run.export import export_row
from distill.run.recipe import RecipeError, validate_recipe
from distill.run.results import find_row
from distill.run.runner import run_recipe
from distill.tasks.ner_metrics import entity_scores
from tests.conftest import SHARED_DATA
from tests.hf_models import save_tiny_bert_folder
from tests.ner_reference import entity_f1

ROWS = [("a fine film", "positive"), ("dull and long", "negative"), ("it is a film", "neutral")]


def _csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "".join(f"{text},{label}\n" for text, label in rows))
    return path


def test_three_string_classes_get_sorted_names_and_ids(tmp_path):
    data = load_text_data(TextFiles("csv", _csv(tmp_path / "train.csv", ROWS * 2), test=_csv(tmp_path / "t.csv", ROWS)))
    assert data.kind == "sequence" and data.label_names == ["negative", "neutral", "positive"]
    assert data.train.labels == [2, 0, 1] * 2 and data.train.inputs[0] == "a fine film"
    assert list(data.evaluation) == ["test"] and data.score_split == "test"


def test_integer_labels_jsonl_pairs_and_given_names(tmp_path):
    rows = [
        {"premise": "a cat", "hypothesis": "an animal", "label": 0},
        {"premise": "a", "hypothesis": "b", "label": 2},
    ]
    path = tmp_path / "nli.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = load_text_data(TextFiles("jsonl", path, text=["premise", "hypothesis"]))
    assert data.train.inputs[0] == ("a cat", "an animal") and data.label_names == ["0", "2"]
    named = load_text_data(TextFiles("jsonl", path, text=["premise", "hypothesis"], labels=["yes", "maybe", "no"]))
    assert named.train.labels == [0, 2] and named.label_names == ["yes", "maybe", "no"]


def test_errors_name_the_file_the_line_and_what_is_right(tmp_path):
    train = _csv(tmp_path / "train.csv", ROWS)
    with pytest.raises(
        DataError, match=r"train\.csv: no column 'sentence' for the text; the columns are 'text', 'label'"
    ):
        load_text_data(TextFiles("csv", train, text="sentence"))
    dev = _csv(tmp_path / "dev.csv", [("fine", "positive"), ("odd", "mixed")])
    with pytest.raises(DataError, match=r"dev\.csv:3: label 'mixed' is not a label of the training data"):
        load_text_data(TextFiles("csv", train, validation=dev))
    empty_text = _csv(tmp_path / "empty.csv", [("fine", "positive"), ("", "negative")])
    with pytest.raises(DataError, match=r"empty\.csv:3: column 'text' has no text"):
        load_text_data(TextFiles("csv", empty_text))
    (tmp_path / "none.csv").write_text("text,label\n")
    with pytest.raises(DataError, match=r"none\.csv: .*empty"):
        load_text_data(TextFiles("csv", tmp_path / "none.csv"))
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b" "label": 2}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: not a valid jsonl file: .* at line 2"):
        load_text_data(TextFiles("jsonl", tmp_path / "bad.jsonl"))


def test_tags_from_jsonl_infer_bioes_and_refuse_unseen_tags(tmp_path):
    rows = [
        {"tokens": ["New", "York", "is", "big"], "tags": ["B-LOC", "E-LOC", "O", "O"]},
        {"tokens": ["Ann"], "tags": ["S-PER"]},
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = load_text_data(TextFiles("jsonl", train))
    assert data.kind == "token" and data.scheme == "BIOES"
    assert data.label_names == ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-PER", "I-PER", "E-PER", "S-PER"]
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"tokens": ["x"], "tags": ["S-ORG"]}) + "\n")
    with pytest.raises(DataError, match=r"dev\.jsonl: sentence 1 has tag 'S-ORG', which the training data never uses"):
        load_text_data(TextFiles("jsonl", train, validation=dev))
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"tokens": ["x", "y"], "tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match=r"sentence 1 has 2 words but tags 1"):
        load_text_data(TextFiles("jsonl", wrong))


def test_resume_ner_loads_as_shipped_with_bmes_tags():
    folder = SHARED_DATA / "resume-ner"
    files = TextFiles(
        "conll", folder / "train.char.bmes", validation=folder / "dev.char.bmes", test=folder / "test.char.bmes"
    )
    data = load_text_data(files)
    assert data.scheme == "BMES" and data.kind == "token"
    assert [len(data.train.inputs), len(data.evaluation["validation"].inputs), len(data.evaluation["test"].inputs)] == [
        3821,
        463,
        477,
    ]
    assert sum(len(words) for words in data.train.inputs) == 124099  # characters, as its README counts
    types = {name.partition("-")[2] for name in data.label_names if name != "O"}
    assert types == {"TITLE", "ORG", "NAME", "EDU", "PRO", "CONT", "RACE", "LOC"}
    entities = sum(data.label_names[i][0] in "BS" for row in data.train.labels for i in row)
    assert entities == 13438


def test_seqeval_scores_agree_with_the_hand_count():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O"]]
    assert entity_scores(gold, predicted)["f1"] == pytest.approx(entity_f1(gold, predicted)["f1"]) == 2 / 3
    # BMES, strict: gold NAME (B M E) and ORG (S); predicted NAME right, ORG as a lone B (no entity):
    # precision 1/1, recall 1/2, F1 2/3.
    scores = entity_scores([["B-NAME", "M-NAME", "E-NAME", "S-ORG"]], [["B-NAME", "M-NAME", "E-NAME", "B-ORG"]], "BMES")
    assert (scores["precision"], scores["recall"]) == (1.0, 0.5) and scores["f1"] == pytest.approx(2 / 3)


def test_recipe_file_fields_validate_with_the_key_path(tmp_path):
    models = {"teacher": {"model": {"kind": "hf"}}, "student": {"model": {"kind": "hf", "layers": 2}}}
    recipe = validate_recipe({"data": {"format": "csv", "train": "t.csv"}, **models})
    assert recipe.data.dataset == "files"
    with pytest.raises(RecipeError, match=r"data\.format"):
        validate_recipe({"data": {"train": "t.csv"}, **models})
    with pytest.raises(RecipeError, match="give one of them"):
        validate_recipe({"data": {"dataset": "sst2", "format": "csv", "train": "t.csv"}})


def test_a_three_class_csv_distils_from_a_recipe(tmp_path):
    folder = save_tiny_bert_folder(tmp_path / "teacher")
    train = _csv(tmp_path / "train.csv", ROWS * 12)
    dev = _csv(tmp_path / "dev.csv", ROWS * 2)
    train_settings = {"epochs": 1, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 1e-3}}
    raw = {
        "data": {"format": "csv", "train": str(train), "validation": str(dev)},
        "teacher": {"model": {"kind": "hf", "path": folder}, "train": train_settings},
        "student": {"model": {"kind": "hf", "path": folder, "layers": 2}, "train": train_settings},
        "distill": {"response_loss": "kd", "temperature": 2.0, "hard_weight": 1.0},
    }
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    assert results["dataset"] == "files" and results["metric_label"] == "accuracy (validation)"
    assert [row["role"] for row in results["rows"]] == ["baseline", "distilled"]
    assert results["evaluation_examples"] == 6 and results["train_examples"] == 36

    # the distilled student as a Hugging Face folder that plain transformers serves
    export_row(tmp_path / "run", tmp_path / "export")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "export")
    assert model.config.num_hidden_layers == 2
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    classify = transformers.pipeline(
        "text-classification", model=model, tokenizer=transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    )
    dev_rows = ROWS * 2
    predicted = [answer["label"] for answer in classify([text for text, _ in dev_rows])]
    accuracy = sum(p == gold for p, (_, gold) in zip(predicted, dev_rows, strict=True)) / len(dev_rows)
    assert accuracy == pytest.approx(find_row(results, "distilled")["score"]["mean"])

    # the CLI: predictions with label names, and the layer names of a text recipe's student
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": ROWS[0][0]}) + "\n")
    runner = CliRunner()
    result = runner.invoke(
        app, ["predict", str(tmp_path / "export"), "--text", ROWS[1][0], "--input", str(tmp_path / "in.jsonl")]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [line["label"] for line in lines] == [predicted[1], predicted[0]]
    assert all(sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-4) for line in lines)
    (tmp_path / "recipe.yaml").write_text(json.dumps(raw))
    result = runner.invoke(app, ["inspect", str(tmp_path / "recipe.yaml")])
    assert result.exit_code == 0, result.output
    assert "hidden:2" in result.output and "attention:1" in result.output and "(2, 3)" in result.output


def test_a_fine_tuned_teacher_folder_is_used_as_it_is(tmp_path):
    folder = tmp_path / "teacher"
    save_tiny_bert_folder(folder)
    torch.manual_seed(0)
    tuned = transformers.BertForSequenceClassification.from_pretrained(
        folder, num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"}
    )
    tuned.save_pretrained(folder)
    train = _csv(tmp_path / "train.csv", ROWS * 4)
    raw = {
        "data": {"format": "csv", "train": str(train), "validation": str(train)},
        "teacher": {"model": {"kind": "hf", "path": str(folder)}},
        "student": {"model": {"kind": "hf", "layers": 1}, "train": {"epochs": 1, "batch_size": 8}},
        "distill": {"response_loss": "kd", "temperature": 2.0},
    }
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "teacher").exists()  # not fine-tuned again
    expected = load_text_data(TextFiles("csv", train)).train.labels
    with torch.no_grad():
        tokens = transformers.AutoTokenizer.from_pretrained(folder)([text for text, _ in ROWS * 4], padding=True)
        logits = tuned.eval()(**{k: torch.tensor(v) for k, v in tokens.items()}).logits
    accuracy = float((logits.argmax(-1) == torch.tensor(expected)).float().mean())
    assert results["teacher"]["score"] == pytest.approx(accuracy)

    two = _csv(tmp_path / "two.csv", [("good", "pos"), ("bad", "neg")])
    raw["data"] = {"format": "csv", "train": str(two), "validation": str(two)}
    with pytest.raises(ValueError, match=r"the model's labels \['negative', 'neutral', 'positive'\] are not"):
        run_recipe(validate_recipe(raw), raw, tmp_path / "run2", show_progress=False)


def test_unlabeled_texts_reach_only_the_distilled_student_with_labels_hidden(tmp_path):
    from distill.tasks.registry import load_task

    folder = save_tiny_bert_folder(tmp_path / "bert")
    train = _csv(tmp_path / "train.csv", ROWS * 4)
    extra = tmp_path / "more.jsonl"
    extra.write_text("".join(json.dumps({"text": f"more text {i}"}) + "\n" for i in range(20)))
    settings = {"epochs": 1, "batch_size": 4}
    raw = {
        "data": {"format": "csv", "train": str(train), "validation": str(train), "unlabeled": str(extra)},
        "teacher": {"model": {"kind": "hf", "path": folder}, "train": settings},
        "student": {"model": {"kind": "hf", "layers": 1}, "train": settings},
        "distill": {"response_loss": "kd", "temperature": 2.0, "hard_weight": 1.0},
    }
    recipe = validate_recipe(raw)
    task = load_task(recipe)
    assert len(task.train) == 12 and len(task.with_unlabeled().train) == 32
    labels = [int(task.with_unlabeled().train[i]["labels"]) for i in range(32)]
    assert all(label >= 0 for label in labels[:12]) and labels[12:] == [-100] * 20
    run_recipe(recipe, raw, tmp_path / "run", show_progress=False)

    def steps(role: str) -> int:
        lines = (tmp_path / "run" / role / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if '"epoch"' in line][-1]["step"]

    assert steps("teacher") == 3 and steps("seed-0/baseline") == 3 and steps("seed-0/distilled") == 8


def test_a_teacher_head_of_another_size_is_named_before_loading():
    from distill.models.hf.loading import check_head_labels

    check_head_labels("t", ["LABEL_0", "LABEL_1", "LABEL_2"], ["a", "b", "c"])  # generic names: any, same count
    with pytest.raises(ValueError, match=r"t: the model's head has 2 labels but the data have 3 \(a, b, c\)"):
        check_head_labels("t", ["LABEL_0", "LABEL_1"], ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"same names in another order: set data\.labels"):
        check_head_labels("t", ["b", "a"], ["a", "b"])


def test_a_preset_takes_the_recipes_unlabeled_texts_in_its_own_column(tmp_path):
    from distill.tasks.registry import load_task

    folder = save_tiny_bert_folder(tmp_path / "bert")
    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    for name, header in (("train.tsv", "label\tsentence"), ("dev.tsv", "label\tcontent")):
        (sst2 / name).write_text(header + "\n" + "".join(f"{i % 2}\tline {i}\n" for i in range(6)))
    extra = tmp_path / "more.jsonl"
    extra.write_text("".join(json.dumps({"sentence": f"unlabelled {i}"}) + "\n" for i in range(5)))
    raw = {
        "data": {"dataset": "sst2", "data_dir": str(sst2), "unlabeled": str(extra)},
        "teacher": {"model": {"kind": "hf", "path": folder}},
        "student": {"model": {"kind": "hf", "layers": 1}},
    }
    task = load_task(validate_recipe(raw))
    assert len(task.train) == 6 and len(task.with_unlabeled().train) == 11
    assert [int(task.with_unlabeled().train[i]["labels"]) for i in range(6, 11)] == [-100] * 5


def test_predict_and_eval_take_a_run_folder_a_checkpoint_or_an_export(tmp_path):
    folder = save_tiny_bert_folder(tmp_path / "teacher")
    train = _csv(tmp_path / "train.csv", ROWS * 4)
    settings = {"epochs": 1, "batch_size": 8}
    raw = {
        "data": {"format": "csv", "train": str(train), "validation": str(train), "test": str(train)},
        "teacher": {"model": {"kind": "hf", "path": folder}, "train": settings},
        "student": {"model": {"kind": "hf", "layers": 1}, "train": settings},
    }
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    export_row(tmp_path / "run", tmp_path / "export")
    checkpoint = next((tmp_path / "run" / "seed-0" / "distilled" / "checkpoints").glob("epoch-*"))
    runner = CliRunner()
    outputs = []
    for source in (tmp_path / "export", tmp_path / "run", checkpoint):
        result = runner.invoke(app, ["predict", str(source), "--text", ROWS[0][0], "--text", ROWS[1][0]])
        assert result.exit_code == 0, result.output
        outputs.append([json.loads(line) for line in result.output.splitlines() if line.startswith("{")])
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0]) == 2
    refused = runner.invoke(app, ["predict", str(tmp_path), "--text", "x"])
    assert refused.exit_code != 0 and "is not a model distill can serve" in refused.output

    (tmp_path / "recipe.yaml").write_text(json.dumps(raw))
    scored = runner.invoke(app, ["eval", str(tmp_path / "export"), "--recipe", str(tmp_path / "recipe.yaml")])
    assert scored.exit_code == 0, scored.output
    assert f"accuracy (test) {100 * find_row(results, 'distilled')['score']['mean']:.2f}%" in scored.output
    other = runner.invoke(
        app, ["eval", str(tmp_path / "export"), "--recipe", str(tmp_path / "recipe.yaml"), "--split", "validation"]
    )
    assert other.exit_code == 0 and "accuracy (validation)" in other.output
    wrong = runner.invoke(
        app, ["eval", str(tmp_path / "export"), "--recipe", str(tmp_path / "recipe.yaml"), "--split", "x"]
    )
    assert wrong.exit_code != 0 and "this task evaluates on test, validation" in wrong.output
    bare = runner.invoke(app, ["eval", str(tmp_path / "export")])
    assert bare.exit_code != 0 and "pass --recipe" in bare.output
