"""The README's library example runs as written (with fewer epochs) and trains a useful student."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_demo_and_test_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_library_example_runs(tmp_path, monkeypatch) -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 16
    code = code.replace("epochs=20", "epochs=3")
    script = tmp_path / "example.py"
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(script))
    from distill.run.measure import accuracy_on

    student_accuracy = accuracy_on(namespace["student"], namespace["data"].test)
    assert student_accuracy > 0.8  # ten classes: chance is 0.1
    assert (tmp_path / "runs" / "lib-student" / "metrics.jsonl").is_file()


def test_readme_method_table_is_the_catalogue() -> None:
    from distill.report.catalog import markdown_table

    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- method-table:start -->\n") + len("<!-- method-table:start -->\n")
    end = readme.index("\n<!-- method-table:end -->")
    assert readme[start:end] == markdown_table()


def test_readme_transformer_example_runs(tmp_path, monkeypatch) -> None:
    """The Hugging Face example, on 200 SST-2 sentences: the distilled 3-layer student beats chance."""
    readme = (ROOT / "README.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "distill.models.hf" in block)
    code = code.replace("train_subset=1000", "train_subset=200")
    script = tmp_path / "hf_example.py"
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    namespace = runpy.run_path(str(script))
    assert len(namespace["student"].bert.encoder.layer) == 3
    record = (tmp_path / "runs" / "hf-student" / "metrics.jsonl").read_text().splitlines()[-1]
    assert '"eval_accuracy"' in record


def _section(readme: str, title: str) -> str:
    start = readme.index(f"## {title}\n")
    return readme[start : readme.index("\n## ", start + 1)]


def test_readme_own_data_section_runs_as_written(tmp_path, monkeypatch) -> None:
    """The recipe, the two commands and the pipeline of "Distil your own model on your own data", on a
    tiny fine-tuned BERT folder and a few CSV rows (one epoch)."""
    import shlex

    import torch
    import transformers
    from typer.testing import CliRunner

    from distill.cli import app
    from tests.hf_models import save_tiny_bert_folder

    section = _section((ROOT / "README.md").read_text(), "Distil your own model on your own data")
    recipe = re.search(r"```yaml\n(.*?)```", section, re.S).group(1).replace("epochs: 3", "epochs: 1")
    commands = [
        line.split("#")[0].strip() for line in re.search(r"```bash\n(.*?)```", section, re.S).group(1).splitlines()
    ]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-recipe.yaml").write_text(recipe)
    rows = [("a gripping film", "positive"), ("dull and long", "negative"), ("a film", "neutral")] * 8
    (tmp_path / "data").mkdir()
    for name in ("train.csv", "dev.csv"):
        (tmp_path / "data" / name).write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows))
    folder = tmp_path / "models" / "my-classifier"
    save_tiny_bert_folder(folder)
    torch.manual_seed(0)
    names = {0: "negative", 1: "neutral", 2: "positive"}
    transformers.BertForSequenceClassification.from_pretrained(folder, num_labels=3, id2label=names).save_pretrained(
        folder
    )
    runner = CliRunner()
    for command in filter(None, commands):
        result = runner.invoke(app, shlex.split(command)[1:])
        assert result.exit_code == 0, f"{command}: {result.output}"
    assert not (tmp_path / "runs" / "mine" / "teacher").exists()  # the teacher was used as it is
    script = tmp_path / "example.py"
    script.write_text(code)
    namespace = runpy.run_path(str(script))
    assert namespace["classify"]("a film")[0]["label"] in names.values()
