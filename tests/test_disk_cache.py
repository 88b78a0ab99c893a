"""``teacher.cache`` for classification and tagging: the teacher's logits and captured layers per example on
disk, equal to the live teacher's, refused when stale, resumed after a kill, reused by a later run."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file

from distill.core.cache import teacher_forward
from distill.core.disk_cache import OutputCache, fill_output_cache
from distill.core.shard_store import StaleCacheError
from distill.run.recipe import RecipeError, validate_recipe
from distill.run.runner import make_context, run_recipe
from tests.hf_models import save_tiny_bert_folder, tiny_bert

NAMES = ["attention:1", "hidden:2"]


def _examples(count: int = 7) -> list[dict[str, torch.Tensor]]:
    """Token-tagging examples of lengths 3..(count + 2), unpadded, as a text dataset yields them."""
    generator = torch.Generator().manual_seed(0)
    return [
        {"input_ids": torch.randint(1, 60, (3 + i,), generator=generator), "attention_mask": torch.ones(3 + i)}
        for i in range(count)
    ]


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right padding to the longest example, as the text tasks pad."""
    longest = max(len(item["input_ids"]) for item in items)
    pad = {
        key: torch.stack([torch.nn.functional.pad(x[key], (0, longest - len(x[key]))) for x in items])
        for key in items[0]
    }
    pad["attention_mask"] = pad["attention_mask"].long()
    pad["labels"] = torch.zeros(len(items), longest, dtype=torch.long)
    return pad


def test_stored_outputs_are_the_live_teachers_under_other_padding_and_take_no_padding_on_disk(tmp_path):
    teacher, data = tiny_bert("token", layers=4), _examples()
    cache = fill_output_cache(tmp_path, teacher, NAMES, data, _collate, batch_size=3, shard_examples=3)
    assert len(cache.manifest["shards"]) == 3 and len(cache) == 7  # 3 + 3 + 1 examples
    # examples 6, 1, 4 batched together with two more padded positions than the longest needs
    order = [6, 1, 4]
    batch = _collate([data[i] for i in order])
    batch = {k: torch.nn.functional.pad(v, (0, 2)) for k, v in batch.items() if k != "labels"}
    cached = cache.lookup(NAMES, torch.tensor(order), batch["attention_mask"])
    live = teacher_forward(teacher, NAMES, batch)
    valid = batch["attention_mask"].bool()
    assert torch.allclose(cached["logits"][valid], live["logits"][valid], atol=1e-6)
    assert torch.allclose(cached["hidden:2"][valid], live["hidden:2"][valid], atol=1e-6)
    pairs = valid[:, None, :, None] & valid[:, None, None, :]  # (B, heads, L, L) valid query-key pairs
    attention = cached["attention:1"]
    assert torch.allclose(
        attention[pairs.expand_as(attention)], live["attention:1"][pairs.expand_as(attention)], atol=1e-6
    )
    assert float(attention[~pairs.expand_as(attention)].abs().sum()) == 0.0
    # on disk: exactly the valid positions, float32 (logits 3, hidden 16, attention 2 heads x L x L per example)
    lengths = torch.arange(3, 10)
    expected = int((lengths * 3 + lengths * 16 + 2 * lengths**2).sum()) * 4
    stored = sum(
        t.numel() * t.element_size()
        for shard in cache.manifest["shards"]
        for key, t in load_file(tmp_path / cache.folder.name / shard["file"]).items()
        if not key.endswith("#shape")
    )
    assert stored == expected
    cache.verify()


def test_another_teacher_gets_its_own_folder_and_a_foreign_manifest_is_refused(tmp_path):
    teacher, data = tiny_bert("sequence", layers=2), _examples(4)
    first = fill_output_cache(tmp_path, teacher, [], data, _collate)
    with torch.no_grad():
        next(teacher.parameters()).view(-1)[0] += 1e-3  # one weight changes
    second = fill_output_cache(tmp_path, teacher, [], data, _collate)
    assert first.folder != second.folder and first.manifest["key"] != second.manifest["key"]
    assert fill_output_cache(tmp_path, tiny_bert("sequence", layers=2), [], data, _collate).folder == first.folder
    manifest = json.loads((first.folder / "manifest.json").read_text())
    (first.folder / "manifest.json").write_text(json.dumps({**manifest, "key": "0" * 64}))
    with pytest.raises(StaleCacheError, match="another teacher, data or captured layers"):
        OutputCache(first.folder, expected_key=manifest["key"])
    with pytest.raises(StaleCacheError, match="another teacher, data or captured layers"):
        fill_output_cache(tmp_path, tiny_bert("sequence", layers=2), [], data, _collate)


def test_a_fill_killed_after_its_first_shard_resumes_there(tmp_path, monkeypatch):
    teacher, data = tiny_bert("token", layers=2), _examples(6)
    calls = {"count": 0}
    real = teacher_forward

    def dies_on_the_second_shard(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 2:
            raise KeyboardInterrupt  # the second shard's first batch
        return real(*args, **kwargs)

    monkeypatch.setattr("distill.core.disk_cache.teacher_forward", dies_on_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        fill_output_cache(tmp_path / "killed", teacher, ["hidden:1"], data, _collate, batch_size=3, shard_examples=3)
    folder = next((tmp_path / "killed").iterdir())
    assert [s["file"] for s in json.loads((folder / "manifest.json").read_text())["shards"]] == [
        "shard-00000.safetensors"
    ]
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
    with pytest.raises(ValueError, match="unfinished"):
        OutputCache(folder)
    first_shard = (folder / "shard-00000.safetensors").stat().st_mtime_ns
    resumed = fill_output_cache(tmp_path / "killed", teacher, ["hidden:1"], data, _collate, batch_size=3)
    assert (folder / "shard-00000.safetensors").stat().st_mtime_ns == first_shard  # kept, not made again
    whole = fill_output_cache(tmp_path / "whole", teacher, ["hidden:1"], data, _collate, batch_size=3, shard_examples=3)
    for index in range(6):
        assert torch.equal(resumed.example("hidden:1", index), whole.example("hidden:1", index))


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> str:
    return save_tiny_bert_folder(tmp_path_factory.mktemp("tiny-bert"))


def _recipe(folder: str, cache: dict | None) -> dict:
    train = {"epochs": 2, "batch_size": 8, "optimizer": {"lr": 1e-3}}
    raw = {
        "name": "cached",
        "data": {"dataset": "sst2", "train_subset": 24, "max_length": 24},
        "teacher": {"model": {"kind": "hf", "path": folder}, "train": {**train, "epochs": 1}},
        "student": {"model": {"kind": "hf", "path": folder, "layers": 1}, "train": train, "baseline": False},
        "distill": {
            "temperature": 2.0,
            "matches": [{"student": "hidden:1", "teacher": "hidden:2", "loss": "hidden_mse"}],
        },
    }
    if cache is not None:
        raw["teacher"]["cache"] = cache
    return raw


def _student_weights(out) -> dict[str, torch.Tensor]:
    return load_file(sorted(out.glob("seed-0/distilled/checkpoints/epoch-*/model.safetensors"))[-1])


def test_a_run_reads_the_cache_trains_as_a_live_teacher_and_a_later_run_reuses_it(bert_folder, tmp_path, monkeypatch):
    shared = tmp_path / "shared-cache"
    raw = _recipe(bert_folder, {"dir": str(shared), "shard_examples": 10})
    run_recipe(validate_recipe(raw), raw, tmp_path / "cached", show_progress=False)
    live = _recipe(bert_folder, None)
    run_recipe(validate_recipe(live), live, tmp_path / "live", show_progress=False)
    cached, reference = _student_weights(tmp_path / "cached"), _student_weights(tmp_path / "live")
    assert max(float((cached[k] - reference[k]).abs().max()) for k in cached) < 1e-5
    (folder,) = list(shared.iterdir())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["names"] == ["hidden:2"] and manifest["examples"] == 24 and len(manifest["shards"]) == 3
    made = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*")}

    def no_live_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran although the cache holds its outputs")

    monkeypatch.setattr("distill.core.distiller.teacher_forward", no_live_teacher)
    monkeypatch.setattr("distill.core.disk_cache.teacher_forward", no_live_teacher)
    run_recipe(validate_recipe(raw), raw, tmp_path / "again", show_progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*")} == made


def test_a_cache_on_jittered_tensor_data_or_with_top_k_on_a_classifier_is_refused(bert_folder, tmp_path):
    digits = {"data": {"dataset": "digits"}, "teacher": {"cache": {}}}
    with pytest.raises(ValueError, match=r"teacher\.cache stores each training example.s teacher outputs"):
        make_context(validate_recipe(digits), digits, tmp_path, show_progress=False).check_distillation()
    raw = _recipe(bert_folder, {"top_k": 8})
    with pytest.raises(ValueError, match=r"teacher.cache.top_k does not apply to a classifier's per-example cache"):
        make_context(validate_recipe(raw), raw, tmp_path, show_progress=False).check_distillation()
    with pytest.raises(RecipeError, match="dtype"):
        validate_recipe(_recipe(bert_folder, {"dtype": "float64"}))


def test_cache_teacher_fills_a_classifiers_cache_that_the_run_then_reads(bert_folder, tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app

    raw = _recipe(bert_folder, {"dir": str(tmp_path / "cache")})
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    filled = CliRunner().invoke(app, ["cache-teacher", str(recipe), "--out", str(tmp_path / "run"), "--quiet"])
    assert filled.exit_code == 0, filled.output
    message = " ".join(filled.output.split())
    assert "teacher output cache of 24 examples (logits, hidden:2)" in message, message
    per_example = int(re.search(r"([\d,]+) bytes per example", message).group(1).replace(",", ""))
    (folder,) = list((tmp_path / "cache").iterdir())
    assert per_example * 24 == pytest.approx(OutputCache(folder).bytes_on_disk(), abs=24)
    made = (folder / "manifest.json").stat().st_mtime_ns
    # the recipe trains its teacher, which cache-teacher did in the run folder: the run continues from it
    ran = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), "--quiet", "--resume"])
    assert ran.exit_code == 0, ran.output
    assert (folder / "manifest.json").stat().st_mtime_ns == made  # found finished: nothing was recomputed
    assert (tmp_path / "run" / "seed-0" / "distilled").is_dir()
