"""Recipe runs beyond one frozen teacher -> one student: ensembles, transfer sets, chains, trees, and the
strategies that train several networks together (mutual learning, self-distillation, born-again).

Run folder layout (besides :mod:`distill.pipeline`'s)::

    <out>/teacher/member-<n>/                  ensemble teachers (teacher.ensemble)
    <out>/seed-<s>/assistant-<n>/              teacher assistants (student.chain), largest first
    <out>/seed-<s>/distilled-single/           ensemble runs: the student distilled from member 0 alone
    <out>/seed-<s>/alone-<i>/, mutual/         strategy mutual: each peer alone, then the cohort together
    <out>/seed-<s>/self-distilled/             strategy self_distill: the multi-exit network
    <out>/seed-<s>/generation-<g>/             strategy born_again: generation g, distilled from g - 1
    <out>/seed-<s>/distilled/tree.png          tree students: the learned filters and leaf distributions
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from distill.core.distiller import SupervisedObjective
from distill.data import DataSplits
from distill.models import build_model
from distill.models.soft_tree import SoftDecisionTree
from distill.run.measure import accuracy_on
from distill.run.recipe import Recipe
from distill.strategies.chain import run_chain
from distill.strategies.ensemble import EnsembleTeacher
from distill.strategies.mutual import MutualObjective
from distill.strategies.self_distill import SelfDistillationObjective, multi_exit_cnn1d, multi_exit_mlp
from distill.strategies.soft_tree import SoftTreeObjective
from distill.train import evaluate
from distill.train.checkpoint import latest_checkpoint

TrainFn = Callable[[Any, DataSplits, Path, int, str], dict]  # (objective, data, run_dir, seed, label)
PEER_SEED_STRIDE = 1000  # peer i of seed s is initialised with seed s + 1000 i (peer 0 = the offline student)


# ---------------------------------------------------------------- data: transfer sets


def without_labels(dataset: TensorDataset) -> TensorDataset:
    """The same inputs with every label set to -100 (ignored by every loss): nothing can leak."""
    inputs, labels = dataset.tensors[:2]
    return TensorDataset(inputs, torch.full_like(labels, -100))


def _with_train(data: DataSplits, train: TensorDataset) -> DataSplits:
    return DataSplits(data.name, train, data.test, data.val, data.num_classes, data.input_shape)


def transfer_splits(recipe: Recipe, data: DataSplits, seed: int = 0) -> tuple[DataSplits, DataSplits, DataSplits]:
    """``(teacher data, distillation data, labelled student data)`` as ``recipe.transfer`` says.

    ``split: unseen`` draws ``teacher_share`` of the training set (seeded by ``data.split_seed``) for the
    teacher and leaves the rest to the students, so they learn on examples the teacher never saw;
    ``labels: false`` hides the labels of the distillation data. The hard-label baseline keeps them: it
    shows what the labels the distilled student never saw would have been worth.
    """
    spec = recipe.transfer
    teacher_data = student_data = data
    if spec.split == "unseen":
        generator = torch.Generator().manual_seed(recipe.data.split_seed)
        order = torch.randperm(len(data.train), generator=generator)
        cut = round(spec.teacher_share * len(order))
        if cut < 1 or cut >= len(order):
            raise ValueError(f"transfer.teacher_share {spec.teacher_share} leaves no examples for teacher or student")
        inputs, labels = data.train.tensors[:2]
        teacher_data = _with_train(data, TensorDataset(inputs[order[:cut]], labels[order[:cut]]))
        student_data = _with_train(data, TensorDataset(inputs[order[cut:]], labels[order[cut:]]))
    distil_data = student_data if spec.labels else _with_train(student_data, without_labels(student_data.train))
    return teacher_data, distil_data, student_data


# ---------------------------------------------------------------- teachers: ensembles


def train_ensemble(recipe: Recipe, data: DataSplits, out: Path, train: TrainFn) -> tuple[EnsembleTeacher, list[dict]]:
    """Train every member of ``teacher.ensemble`` into ``<out>/teacher/member-<n>``; return the ensemble and
    one entry per member (seed, architecture, test accuracy, weights file)."""
    spec = recipe.teacher.ensemble
    assert spec is not None
    members, entries = [], []
    for number in range(spec.size):
        model_spec = spec.models[number] if spec.models else recipe.teacher.model
        seed = recipe.teacher.seed + number
        torch.manual_seed(seed)
        member = build_model(model_spec, data.input_shape, data.num_classes)
        run_dir = out / "teacher" / f"member-{number}"
        train(SupervisedObjective(member), data, run_dir, seed, f"teacher {number}")
        weights = latest_checkpoint(run_dir / "checkpoints") / "model.safetensors"
        entries.append({"seed": seed, "test_accuracy": accuracy_on(member, data.test), "weights": str(weights)})
        members.append(member)
    return EnsembleTeacher(members, spec.space, spec.weights), entries


# ---------------------------------------------------------------- students: trees and chains


def tree_objective(recipe: Recipe, tree: SoftDecisionTree, teacher: nn.Module | None) -> SoftTreeObjective:
    """Frosst & Hinton's objective: labels alone (``teacher=None``), or the teacher's soft targets."""
    spec = recipe.distill
    hard = None if teacher is None else spec.hard_weight
    return SoftTreeObjective(
        tree, teacher, spec.temperature, spec.kd_weight, hard_weight=hard, leaf_loss=recipe.strategy.tree_loss
    )


def image_shape_2d(input_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """``(H, W)`` of single-channel images (so a tree's filters are drawn as pictures), else None."""
    spatial = input_shape[1:] if len(input_shape) == 3 and input_shape[0] == 1 else input_shape
    return (int(spatial[0]), int(spatial[1])) if len(spatial) == 2 else None


def draw_tree(tree: SoftDecisionTree, data: DataSplits, path: Path) -> None:
    from distill.report.tree import plot_soft_tree

    sample = data.test.tensors[0][:512]
    plot_soft_tree(tree, image_shape_2d(data.input_shape), path, max_depth=min(tree.depth, 4), inputs=sample)


def distil_through_chain(
    recipe: Recipe,
    teacher: nn.Module,
    data: DataSplits,
    seed_dir: Path,
    seed: int,
    make_objective: Callable[[nn.Module, nn.Module], Any],
    train: TrainFn,
) -> list[tuple[nn.Module, dict]]:
    """Distil each assistant of ``student.chain`` from the previous model, largest first; return each
    assistant with its entry (the last one teaches the student)."""

    def build(previous: nn.Module, spec: Any) -> nn.Module:
        torch.manual_seed(seed)
        return build_model(spec, data.input_shape, data.num_classes)

    def distil(previous: nn.Module, assistant: nn.Module, index: int) -> dict:
        train(make_objective(previous, assistant), data, seed_dir / f"assistant-{index}", seed, f"assistant {index}")
        return {"seed": seed, "test_accuracy": accuracy_on(assistant, data.test)}

    steps = run_chain(teacher, list(recipe.student.chain), build, distil)
    return [(step.model, step.result) for step in steps]


# ---------------------------------------------------------------- strategies that train several networks


def exit_accuracies(objective: SelfDistillationObjective, network: nn.Module, data: DataSplits) -> list[float]:
    """Test accuracy of every exit of a multi-exit network, shallowest first."""
    network.eval()
    loader = torch.utils.data.DataLoader(data.test, batch_size=512)
    scores = [
        evaluate(lambda inputs, k=k: objective.predict(network, inputs, exit_index=k), loader)["accuracy"]
        for k in range(network.num_exits)
    ]
    network.train()
    return scores


def multi_exit_network(recipe: Recipe, data: DataSplits) -> nn.Module:
    spec = recipe.student.model
    if spec.kind == "cnn1d":
        return multi_exit_cnn1d(data.input_shape, spec.channels, data.num_classes, spec.convs_per_block)
    return multi_exit_mlp(data.input_shape, spec.hidden, data.num_classes, spec.dropout)


def run_mutual(recipe: Recipe, data: DataSplits, out: Path, train: TrainFn) -> dict[str, list[dict]]:
    """Per seed: each peer trained alone, then the same initial peers trained together (DML)."""
    peers_count = recipe.strategy.peers
    runs: dict[str, list[dict]] = {f"peer {i} alone": [] for i in range(peers_count)}
    runs.update({f"peer {i} mutual": [] for i in range(peers_count)})
    for seed in recipe.seeds:
        initial = []
        for i in range(peers_count):
            torch.manual_seed(seed + PEER_SEED_STRIDE * i)
            initial.append(build_model(recipe.student.model, data.input_shape, data.num_classes))
        for i, peer in enumerate(initial):
            alone = copy.deepcopy(peer)
            train(
                SupervisedObjective(alone), data, out / f"seed-{seed}" / f"alone-{i}", seed, f"peer {i} alone s{seed}"
            )
            runs[f"peer {i} alone"].append({"seed": seed, "test_accuracy": accuracy_on(alone, data.test)})
        temperature = recipe.strategy.temperature or 1.0
        objective = MutualObjective([copy.deepcopy(p) for p in initial], temperature=temperature)
        train(objective, data, out / f"seed-{seed}" / "mutual", seed, f"mutual s{seed}")
        for i in range(peers_count):
            runs[f"peer {i} mutual"].append({"seed": seed, "test_accuracy": accuracy_on(objective.peer(i), data.test)})
    return runs


class ExitView(nn.Module):
    """Exit ``depth`` of a multi-exit network as a plain classifier (runs only the blocks it needs)."""

    def __init__(self, network: nn.Module, depth: int) -> None:
        super().__init__()
        self.network, self.depth = network, depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x, depth=self.depth).logits[-1]

    def deployed_parameters(self) -> int:
        """Parameters a deployment of this exit keeps: its blocks and its own head."""
        modules = [*self.network.blocks[: self.depth], self.network.exits[self.depth - 1]]
        return sum(p.numel() for module in modules for p in module.parameters())


def run_self_distill(
    recipe: Recipe, data: DataSplits, out: Path, train: TrainFn, kind_models: dict[str, nn.Module] | None = None
) -> dict[str, list[dict]]:
    """Per seed: the plain network on labels, and the multi-exit network with BYOT; every exit scored.
    ``kind_models`` receives one model per row (for parameters and latency)."""
    spec = recipe.strategy
    runs: dict[str, list[dict]] = {"baseline": []}
    for seed in recipe.seeds:
        torch.manual_seed(seed)
        plain = build_model(recipe.student.model, data.input_shape, data.num_classes)
        train(SupervisedObjective(plain), data, out / f"seed-{seed}" / "baseline", seed, f"baseline s{seed}")
        runs["baseline"].append({"seed": seed, "test_accuracy": accuracy_on(plain, data.test)})
        torch.manual_seed(seed)
        network = multi_exit_network(recipe, data)
        temperature = spec.temperature or 3.0
        objective = SelfDistillationObjective(network, spec.alpha, spec.feature_weight, temperature)
        train(objective, data, out / f"seed-{seed}" / "self-distilled", seed, f"self-distilled s{seed}")
        for k, accuracy in enumerate(exit_accuracies(objective, network, data)):
            kind = f"exit {k + 1}/{network.num_exits}"
            runs.setdefault(kind, []).append({"seed": seed, "test_accuracy": accuracy})
            if kind_models is not None:
                kind_models[kind] = ExitView(network, k + 1)
    return runs


def run_born_again(
    recipe: Recipe,
    teacher: nn.Module,
    data: DataSplits,
    out: Path,
    make_objective: Callable[[nn.Module, nn.Module], Any],
    train: TrainFn,
    kind_models: dict[str, nn.Module] | None = None,
) -> dict[str, list[dict]]:
    """Per seed: generations 1..G of the teacher's architecture, each distilled from the one before.
    ``kind_models`` receives the ensemble of generations (for its parameters and latency)."""
    runs: dict[str, list[dict]] = {}
    for seed in recipe.seeds:
        generations = [teacher]
        for g in range(1, recipe.strategy.generations + 1):
            torch.manual_seed(seed + PEER_SEED_STRIDE * g)
            student = build_model(recipe.student.model, data.input_shape, data.num_classes)
            train(
                make_objective(generations[-1], student),
                data,
                out / f"seed-{seed}" / f"generation-{g}",
                seed,
                f"gen {g}",
            )
            runs.setdefault(f"generation {g}", []).append(
                {"seed": seed, "test_accuracy": accuracy_on(student, data.test)}
            )
            generations.append(student)
        if recipe.strategy.ensemble_generations:
            ensemble = EnsembleTeacher(generations, "probability")
            kind = f"ensemble of generations 0-{len(generations) - 1}"
            runs.setdefault(kind, []).append({"seed": seed, "test_accuracy": accuracy_on(ensemble, data.test)})
            if kind_models is not None:
                kind_models[kind] = ensemble
    return runs
