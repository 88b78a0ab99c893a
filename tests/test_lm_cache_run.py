"""distill cache-teacher, then a run that trains from the on-disk top-k instead of the live teacher (issue 17)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from distill.cli import app
from distill.lm import objective as lm_objective
from tests.test_lm_run import lm_recipe


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cached_recipe(tmp_path: Path) -> dict:
    raw = lm_recipe(tmp_path)
    del raw["teacher"]["train"]  # a pretrained teacher, used as it is: the cache is its outputs
    raw["teacher"]["cache"] = {"top_k": 32, "dir": str(tmp_path / "shared-cache"), "shard_blocks": 64}
    raw["generation"] = {"samples": 0}
    return raw


def test_cache_teacher_then_run_reads_the_cache_not_the_teacher(tmp_path, monkeypatch):
    recipe = _write(tmp_path, _cached_recipe(tmp_path))
    filled = CliRunner().invoke(app, ["cache-teacher", str(recipe), "--out", str(tmp_path / "run"), "--quiet"])
    assert filled.exit_code == 0, filled.output
    message = " ".join(filled.output.split())
    per_token = float(re.search(r"([\d.]+) bytes per token", message).group(1))
    assert "top-32 cache of 170 blocks" in message and per_token <= 128, message
    manifest = tmp_path / "shared-cache" / "manifest.json"
    written = manifest.stat().st_mtime_ns

    sources = []
    original = lm_objective.LMObjective.teacher_outputs

    def spy(self, batch):
        sources.append("cache" if self.cache is not None else "teacher")
        return original(self, batch)

    monkeypatch.setattr(lm_objective.LMObjective, "teacher_outputs", spy)
    ran = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), "--quiet"])
    assert ran.exit_code == 0, ran.output
    assert sources and set(sources) == {"cache"}  # every training batch read the cache
    assert manifest.stat().st_mtime_ns == written  # found finished: nothing was recomputed


def test_a_cache_of_another_teacher_is_refused_before_training(tmp_path):
    raw = _cached_recipe(tmp_path)
    recipe = _write(tmp_path, raw)
    filled = CliRunner().invoke(app, ["cache-teacher", str(recipe), "--out", str(tmp_path / "a"), "--quiet"])
    assert filled.exit_code == 0, filled.output
    from tests.lm_helpers import tiny_lm_folder

    other = tiny_lm_folder(tmp_path / "other-teacher", layers=4, seed=1)
    raw["teacher"]["model"]["path"] = str(other)
    refused = CliRunner().invoke(app, ["run", str(_write(tmp_path, raw)), "--out", str(tmp_path / "b"), "--quiet"])
    assert refused.exit_code != 0
    message = " ".join(refused.output.split())
    assert "was built for another teacher, tokenizer, corpus or k" in message
    assert "delete it or choose another folder" in message
    assert "Traceback" not in refused.output and not (tmp_path / "b" / "seed-0").exists()
