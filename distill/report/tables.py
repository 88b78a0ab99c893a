"""Turn results.json into a table (terminal and markdown) and a PNG of learning curves."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distill.lm.report import markdown_section
from distill.train.atomic import atomic_path, atomic_write_text

HEADERS = ["model", "test accuracy", "parameters", "size on disk", "CPU latency / batch", "speed-up"]


def _score(summary: dict) -> str:
    seeds = len(summary["seeds"])
    value = summary["score"]
    return f"{100 * value['mean']:.2f}% ± {100 * value['std']:.2f} ({seeds} seeds)"


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 1024:.1f} KiB" if size_bytes < 1024**2 else f"{size_bytes / 1024**2:.2f} MiB"


def _latency(model: dict) -> str:
    spread = model.get("cpu_latency_spread")  # absent in results written before interleaved timing
    return f"{model['cpu_latency_ms']:.2f} ms" + (f" (±{50 * spread:.0f}%)" if spread is not None else "")


def latency_note(results: dict) -> str:
    """How latency was measured, and the busy-machine warning when there is one."""
    latency = results.get("latency", {})
    rounds = f" over {latency['rounds']} interleaved rounds" if latency.get("rounds") else ""
    note = (
        f"Latency: median forward time of a {results['latency_probe']} on CPU with {results['torch_threads']} "
        f"threads{rounds} (± half the interquartile range); speed-up: median of the per-round teacher/student ratio."
    )
    return note + (f" **Warning: {latency['warning']}.**" if latency.get("warning") else "")


def _columns(results: dict) -> tuple[bool, bool]:
    """Which optional columns the table has: non-zero parameters (when some model is sparse) and % of the
    teacher (the deployment table of a ``compress:`` run)."""
    models = [*results["rows"], *([results["teacher"]] if "teacher" in results else [])]
    sparse = any(model.get("nonzero_parameters", model["parameters"]) < model["parameters"] for model in models)
    relative = "teacher" in results and any(row["role"] == "compressed" for row in results["rows"])
    return sparse, relative


def _model_row(name: str, score: str, model: dict, speedup: str, results: dict, of_teacher: str = "") -> list[str]:
    sparse, relative = _columns(results)
    return [
        name,
        score,
        *([of_teacher] if relative else []),
        f"{model['parameters']:,}",
        *([f"{model.get('nonzero_parameters', model['parameters']):,}"] if sparse else []),
        _size(model["size_bytes"]),
        _latency(model),
        speedup,
    ]


def table_rows(results: dict) -> list[list[str]]:
    """The teacher (when there is one, with ensemble members), then one row per results row."""
    rows = []
    teacher = results.get("teacher")
    width = len(headers(results))
    if teacher is not None:
        members = teacher.get("members", [])
        name = f"teacher (ensemble of {len(members)})" if members else "teacher"
        rows.append(_model_row(name, f"{100 * teacher['score']:.2f}%", teacher, "1.0x", results, "100%"))
        for member in members:
            rows.append([f"  {member['label']}", f"{100 * member['score']['mean']:.2f}%", *[""] * (width - 2)])
    for row in results["rows"]:
        speedup = f"{row['speedup']:.1f}x" if "speedup" in row else "-"
        share = ""
        if teacher is not None and teacher["score"]:
            share = f"{100 * row['score']['mean'] / teacher['score']:.1f}%"
        rows.append(_model_row(row["label"], _score(row), row, speedup, results, share))
    return rows


def headers(results: dict) -> list[str]:
    """Column titles; the score column names the task's metric and split."""
    sparse, relative = _columns(results)
    return [
        HEADERS[0],
        results["metric_label"],
        *(["% of teacher"] if relative else []),
        HEADERS[2],
        *(["non-zero"] if sparse else []),
        *HEADERS[3:],
    ]


def markdown_table(results: dict) -> str:
    titles = headers(results)
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines)


def print_table(results: dict, console: Console | None = None) -> None:
    split = f"{results['metric_label']}, {results['evaluation_examples']} examples"
    table = Table(title=f"{results['recipe']} on {results['dataset']} ({split})")
    for header in headers(results):
        table.add_column(header, justify="left" if header == "model" else "right")
    for row in table_rows(results):
        table.add_row(*row)
    console = console or Console()
    console.print(table)
    if results.get("latency", {}).get("warning"):
        console.print(f"[yellow]warning: {results['latency']['warning']}[/yellow]")
    if "distillation_gain" in results:
        console.print(
            f"distillation gain over the hard-label student: {100 * results['distillation_gain']:+.2f} "
            f"points of mean {results['metric_label']}"
        )


def _curves(run_dir: Path) -> list[tuple[str, list[int], list[float]]]:
    curves = []
    for metrics in sorted(run_dir.glob("**/metrics.jsonl")):
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        epochs = [r for r in records if r.get("event") == "epoch" and "eval_accuracy" in r]
        if epochs:
            label = str(metrics.parent.relative_to(run_dir))
            curves.append((label, [r["epoch"] + 1 for r in epochs], [100 * r["eval_accuracy"] for r in epochs]))
    return curves


def plot_learning_curves(run_dir: Path, path: Path) -> bool:
    """Per-epoch evaluation accuracy of every stage in ``run_dir``; False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    curves = _curves(run_dir)
    if not curves:
        return False
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for label, epochs, accuracy in curves:
        style = "-" if "distilled" in label else ("--" if "baseline" in label else ":")
        axis.plot(epochs, accuracy, style, label=label, linewidth=1.5)
    axis.set_xlabel("epoch")
    axis.set_ylabel("evaluation accuracy (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    plt.close(figure)
    return True


def _scored_on(results: dict) -> str:
    return f"Score: {results['metric_label']} ({results['evaluation_examples']} examples)"


def throughput_lines(results: dict) -> list[str]:
    """The report's training-throughput table (first seed; all processes together), when rows carry one."""
    entries = [(row["label"], row["details"]) for row in results["rows"] if "details" in row]
    entries = [(label, details) for label, details in entries if "train_examples_per_second" in details]
    if not entries:
        return []
    tokens = any("train_tokens_per_second" in details for _, details in entries)
    lines = ["", "Training throughput (median over epochs, first seed):", ""]
    lines += ["| model | train examples/s |" + (" train tokens/s |" if tokens else ""), "|---|---|" + ("---|" * tokens)]
    for label, details in entries:
        cells = [f"{details['train_examples_per_second']:.1f}"]
        if tokens:
            cells.append(f"{details['train_tokens_per_second']:.0f}" if "train_tokens_per_second" in details else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def write_report(results: dict, run_dir: Path) -> None:
    has_plot = plot_learning_curves(run_dir, run_dir / "curves.png")
    text = [
        f"# {results['recipe']}",
        "",
        f"Dataset: {results['dataset']} ({results['train_examples']} training examples). {_scored_on(results)} "
        f"at the final epoch, mean ± sample std over seeds {results['seeds']}. {latency_note(results)}",
        "",
        markdown_table(results),
        "",
    ]
    if "distillation_gain" in results:
        text.append(f"Distillation gain over the hard-label student: {100 * results['distillation_gain']:+.2f} points.")
    text += markdown_section(results)  # empty unless the rows carry language-model details
    text += throughput_lines(results)
    if has_plot:
        text += ["", "![learning curves](curves.png)"]
    atomic_write_text(run_dir / "report.md", "\n".join(text) + "\n")
