"""Soft decision tree (Frosst & Hinton 2017): hand-computed routing and penalty, gradients, training, plots."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.core.batch import Batch
from distill.models.soft_tree import SoftDecisionTree
from distill.models.soft_tree_objective import SoftTreeObjective
from distill.report.tree import plot_soft_tree

# A depth-2 tree on 2 features, 3 classes: inner nodes 0 (root), 1 (left child), 2 (right child).
WEIGHT = [[1.0, -1.0], [2.0, 0.0], [0.0, 1.0]]
BIAS = [0.0, -1.0, 0.5]
LEAF_LOGITS = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [0.5, 0.5, -1.0]]
INPUTS = [[0.5, 1.0], [-1.0, 0.25]]
BETA = 2.0


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def _hand_tree(**kwargs) -> SoftDecisionTree:
    tree = SoftDecisionTree((2,), 3, depth=2, inverse_temperature=BETA, **kwargs).double()
    with torch.no_grad():
        tree.inner.weight.copy_(torch.tensor(WEIGHT))
        tree.inner.bias.copy_(torch.tensor(BIAS))
        tree.leaf_logits.copy_(torch.tensor(LEAF_LOGITS))
    return tree


def _hand_decisions(x: list[float]) -> list[float]:
    """p_i = σ(β (x·w_i + b_i)) for the three inner nodes, by hand."""
    return [_sigmoid(BETA * (x[0] * w[0] + x[1] * w[1] + b)) for w, b in zip(WEIGHT, BIAS, strict=True)]


def _hand_paths(x: list[float]) -> list[float]:
    """Leaves left to right: (left, left), (left, right), (right, left), (right, right); right = p."""
    p0, p1, p2 = _hand_decisions(x)
    return [(1 - p0) * (1 - p1), (1 - p0) * p1, p0 * (1 - p2), p0 * p2]


def test_hand_computed_paths_and_output() -> None:
    tree = _hand_tree()
    x = torch.tensor(INPUTS, dtype=torch.float64)
    leaves = [_softmax(row) for row in LEAF_LOGITS]
    for row, example in enumerate(INPUTS):
        paths = _hand_paths(example)
        mixture = [sum(paths[leaf] * leaves[leaf][k] for leaf in range(4)) for k in range(3)]
        torch.testing.assert_close(tree.path_probabilities(x)[row], torch.tensor(paths, dtype=torch.float64))
        torch.testing.assert_close(tree(x)[row], torch.tensor([math.log(m) for m in mixture], dtype=torch.float64))
        best = max(range(4), key=paths.__getitem__)
        torch.testing.assert_close(tree.max_path_predict(x)[row], torch.tensor(leaves[best], dtype=torch.float64))
    # First example by explicit arithmetic: z = 2·(0.5 − 1) = −1, 2·(1 − 1) = 0, 2·(1 + 0.5) = 3.
    p0, p1, p2 = _sigmoid(-1.0), 0.5, _sigmoid(3.0)
    assert tree.path_probabilities(x)[0, 3].item() == pytest.approx(p0 * p2)
    assert tree.path_probabilities(x)[0, 0].item() == pytest.approx((1 - p0) * (1 - p1))


def test_penalty_matches_hand_formula() -> None:
    strength, decay = 0.3, 0.25
    tree = _hand_tree(penalty_strength=strength, penalty_decay=decay)
    x = torch.tensor(INPUTS, dtype=torch.float64)
    decisions = [_hand_decisions(example) for example in INPUTS]
    # P^i: reaching the root is certain, node 1 is the root's left child, node 2 its right child.
    reach = [[1.0, 1 - p[0], p[0]] for p in decisions]
    expected = 0.0
    for node, node_depth in zip(range(3), (0, 1, 1), strict=True):
        alpha = sum(r[node] * p[node] for r, p in zip(reach, decisions, strict=True)) / sum(r[node] for r in reach)
        expected -= strength * decay**node_depth * (0.5 * math.log(alpha) + 0.5 * math.log(1 - alpha))
    assert tree.penalty(x).item() == pytest.approx(expected, rel=1e-10)
    assert tree.forward_with_penalty(x)[1].item() == pytest.approx(expected, rel=1e-10)


def test_penalty_is_finite_for_saturated_nodes() -> None:
    tree = SoftDecisionTree((4,), 3, depth=6, inverse_temperature=500.0)
    log_probs, penalty = tree.forward_with_penalty(torch.randn(16, 4) * 10)
    penalty.backward()
    assert torch.isfinite(log_probs).all() and torch.isfinite(penalty)
    assert all(torch.isfinite(p.grad).all() for p in tree.parameters() if p.grad is not None)


@pytest.mark.parametrize("learn_beta", [False, True])
def test_gradcheck_output_and_penalty(learn_beta: bool) -> None:
    tree = SoftDecisionTree((3,), 3, depth=2, inverse_temperature=1.5, learn_inverse_temperature=learn_beta).double()
    names = [name for name, _ in tree.named_parameters()]
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)

    def run(inputs, *parameters):
        output = torch.func.functional_call(
            tree, dict(zip(names, parameters, strict=True)), (inputs,), {"details": True}
        )
        return output.log_probs, output.penalty

    parameters = tuple(p.detach().clone().requires_grad_(True) for p in tree.parameters())
    assert torch.autograd.gradcheck(run, (x, *parameters))


def test_paths_sum_to_one() -> None:
    for beta in (0.5, 1.0, 20.0):
        tree = SoftDecisionTree((1, 8, 8), 10, depth=6, inverse_temperature=beta)
        x = torch.rand(32, 1, 8, 8)
        torch.testing.assert_close(tree.path_probabilities(x).sum(1), torch.ones(32))
        torch.testing.assert_close(tree(x).exp().sum(1), torch.ones(32))
        assert tree(x).shape == (32, 10) and tree.max_path_predict(x).shape == (32, 10)


def test_wrong_input_size_names_the_shapes() -> None:
    tree = SoftDecisionTree((1, 8, 8), 10, depth=2)
    with pytest.raises(ValueError, match=r"64 features"):
        tree(torch.rand(2, 1, 4, 4))


@pytest.fixture
def one_thread():
    """Tiny matrices gain nothing from intra-op threads, which only contend on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    labels = torch.tensor(digits.target)
    return train_test_split(images, labels, test_size=0.3, stratify=labels, random_state=0)


@pytest.mark.parametrize("leaf_loss", ["mixture", "path_weighted"])
def test_trains_on_digits(leaf_loss: str, one_thread) -> None:
    train_x, test_x, train_y, test_y = _digits_split()
    tree = SoftDecisionTree((1, 8, 8), 10, depth=4)
    objective = SoftTreeObjective(tree, leaf_loss=leaf_loss)
    optimizer = torch.optim.Adam(objective.trainable.parameters(), lr=0.03)
    for _ in range(15):
        order = torch.randperm(len(train_x))
        for start in range(0, len(order), 64):
            chosen = order[start : start + 64]
            terms = objective.losses(tree, Batch(train_x[chosen], train_y[chosen]))
            optimizer.zero_grad()
            terms["total"].backward()
            optimizer.step()
    assert set(terms) == {"hard_ce", "tree_penalty", "total"}
    with torch.no_grad():
        accuracy = (objective.predict(tree, test_x).argmax(1) == test_y).float().mean().item()
        max_path = (tree.max_path_predict(test_x).argmax(1) == test_y).float().mean().item()
    assert accuracy > 0.85, accuracy  # chance is 0.1; ~0.95 is typical
    assert max_path > 0.8, max_path


def test_objective_with_teacher() -> None:
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    tree = SoftDecisionTree((1, 8, 8), 10, depth=3)
    x, labels = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    objective = SoftTreeObjective(tree, teacher=teacher, temperature=2.0, hard_weight=0.5)
    terms = objective.losses(tree, Batch(x, labels))
    assert set(terms) == {"soft_ce", "hard_ce", "tree_penalty", "total"}
    assert all(torch.isfinite(value) for value in terms.values())
    with torch.no_grad():
        targets = F.softmax(teacher(x) / 2.0, dim=1)
        expected = -(targets * tree(x)).sum(1).mean()
    torch.testing.assert_close(terms["soft_ce"], expected)
    torch.testing.assert_close(terms["total"], terms["soft_ce"] + 0.5 * terms["hard_ce"] + terms["tree_penalty"])
    terms["total"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tree.parameters())
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not teacher.training
    # Only the soft term by default; the paper's path-weighted form and the max-path prediction also work.
    paper = SoftTreeObjective(tree, teacher=teacher, leaf_loss="path_weighted", prediction="max_path")
    paper_terms = paper.losses(tree, Batch(x, labels))
    assert set(paper_terms) == {"soft_ce", "tree_penalty", "total"} and torch.isfinite(paper_terms["total"])
    assert paper.predict(tree, x).shape == (8, 10)


def test_path_weighted_is_expected_leaf_cross_entropy() -> None:
    tree = _hand_tree()
    x = torch.tensor(INPUTS, dtype=torch.float64)
    labels = torch.tensor([2, 0])
    terms = SoftTreeObjective(tree, leaf_loss="path_weighted").losses(tree, Batch(x, labels))
    leaves = [_softmax(row) for row in LEAF_LOGITS]
    expected = sum(
        sum(path * -math.log(leaves[leaf][label]) for leaf, path in enumerate(_hand_paths(example)))
        for example, label in zip(INPUTS, labels.tolist(), strict=True)
    ) / len(INPUTS)
    assert terms["hard_ce"].item() == pytest.approx(expected, rel=1e-10)


def test_trainer_runs_the_objective(tmp_path, one_thread) -> None:
    from torch.utils.data import TensorDataset

    from distill.train import Trainer
    from distill.train.settings import TrainSettings

    train_x, test_x, train_y, test_y = _digits_split()
    tree = SoftDecisionTree((1, 8, 8), 10, depth=4)
    settings = TrainSettings(epochs=4, batch_size=64, cpu=True, optimizer={"name": "adam", "lr": 0.03})
    record = Trainer(
        SoftTreeObjective(tree),
        TensorDataset(train_x, train_y),
        ("test", TensorDataset(test_x, test_y)),
        settings,
        tmp_path,
        show_progress=False,
    ).fit()
    assert record["eval_accuracy"] > 0.6, record  # chance is 0.1; the loop and protocol are what is tested


@pytest.mark.parametrize(
    ("input_shape", "shape_2d", "depth"),
    [((1, 8, 8), (8, 8), 3), ((40,), None, 2), ((1, 8, 8), (8, 8), 5)],
)
def test_plot_writes_png(tmp_path, input_shape, shape_2d, depth: int) -> None:
    tree = SoftDecisionTree(input_shape, 10, depth=depth)
    path = plot_soft_tree(
        tree, shape_2d, tmp_path / "plots" / "tree.png", max_depth=3, inputs=torch.rand(4, *input_shape)
    )
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["tree.png"]  # no temporary file left behind


def test_plot_rejects_wrong_image_shape(tmp_path) -> None:
    with pytest.raises(ValueError, match="64 weights"):
        plot_soft_tree(SoftDecisionTree((1, 8, 8), 10, depth=2), (28, 28), tmp_path / "tree.png")
