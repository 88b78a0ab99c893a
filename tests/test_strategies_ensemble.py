"""Ensemble teachers and transfer sets: averaging by hand, splits, recipe checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from distill.data import DataSplits
from distill.run.recipe import RecipeError, validate_recipe
from distill.strategies.ensemble import EnsembleTeacher
from distill.strategies.transfer import transfer_tasks
from distill.tasks.tensor import TensorTask


class Fixed(nn.Module):
    """Returns the same logits for every input (one row per example)."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


def _softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_probability_ensemble_averages_the_distributions_by_hand():
    a, b = [2.0, 0.0, -1.0], [0.0, 1.0, 0.0]
    ensemble = EnsembleTeacher([Fixed(a), Fixed(b)], "probability", weights=[3.0, 1.0])
    pa, pb = _softmax(a), _softmax(b)
    expected = [0.75 * x + 0.25 * y for x, y in zip(pa, pb, strict=True)]  # weights normalised to 3/4, 1/4
    got = torch.softmax(ensemble(torch.zeros(2, 5)), dim=-1)
    assert torch.allclose(got, torch.tensor([expected, expected]), atol=1e-6)


def test_logit_ensemble_is_the_weighted_mean_of_logits():
    ensemble = EnsembleTeacher([Fixed([2.0, 0.0]), Fixed([0.0, 4.0])], "logits")
    assert torch.allclose(ensemble(torch.zeros(1, 3)), torch.tensor([[1.0, 2.0]]))


def test_ensemble_of_one_is_the_member_and_gradients_reach_every_member():
    member = nn.Linear(4, 3)
    x = torch.randn(5, 4)
    single = EnsembleTeacher([member], "logits")
    assert torch.allclose(single(x), member(x))
    members = [nn.Linear(4, 3), nn.Linear(4, 3)]
    EnsembleTeacher(members)(x).sum().backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in members)


def test_ensemble_errors_name_the_problem():
    with pytest.raises(ValueError, match="2 weights for 3 members"):
        EnsembleTeacher([nn.Linear(2, 2)] * 3, weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="'probability' or 'logits'"):
        EnsembleTeacher([nn.Linear(2, 2)], space="geometric")
    with pytest.raises(ValueError, match="output shape"):
        EnsembleTeacher([nn.Linear(2, 2), nn.Linear(2, 3)])(torch.zeros(1, 2))


def _data(count: int = 10) -> DataSplits:
    train = TensorDataset(torch.arange(count, dtype=torch.float32).view(count, 1), torch.arange(count) % 3)
    return DataSplits("toy", train, train, None, 3, (1,))


def test_unseen_transfer_split_is_disjoint_and_hides_labels():
    recipe = validate_recipe({"transfer": {"labels": False, "split": "unseen", "teacher_share": 0.3}})
    tasks = transfer_tasks(TensorTask(_data()), recipe.transfer, recipe.data.split_seed)
    teacher, distil, student = tasks.teacher, tasks.distil, tasks.student
    seen = set(teacher.train.tensors[0].flatten().tolist())
    unseen = set(distil.train.tensors[0].flatten().tolist())
    assert len(seen) == 3 and len(unseen) == 7 and not seen & unseen
    assert (distil.train.tensors[1] == -100).all()
    assert torch.equal(student.train.tensors[0], distil.train.tensors[0])
    assert (student.train.tensors[1] == student.train.tensors[0].flatten().long() % 3).all()  # labels kept


def test_shared_transfer_set_without_labels_keeps_the_inputs():
    recipe = validate_recipe({"transfer": {"labels": False}})
    tasks = transfer_tasks(TensorTask(_data()), recipe.transfer, recipe.data.split_seed)
    assert len(tasks.teacher.train) == 10 and tasks.student.train.tensors[1].ge(0).all()
    assert torch.equal(tasks.distil.train.tensors[0], _data().train.tensors[0])
    assert (tasks.distil.train.tensors[1] == -100).all()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"transfer": {"labels": False}, "distill": {"hard_weight": 0.5}}, "hard_weight must be 0"),
        ({"strategy": {"kind": "born_again"}}, "student.model must equal teacher.model"),
        ({"strategy": {"kind": "self_distill"}, "student": {"model": {"kind": "cnn"}}}, "mlp or cnn1d"),
        ({"strategy": {"kind": "mutual"}, "teacher": {"ensemble": {"members": 2}}}, "cannot be combined"),
        ({"teacher": {"ensemble": {"members": 2, "weights": [1]}}}, "need 2 numbers"),
        ({"student": {"chain": [4]}}, "list model blocks"),
        ({"strategy": {"kind": "mutual", "peers": 1}}, "greater than or equal to 2"),
    ],
)
def test_bad_strategy_recipes_say_what_is_wrong(raw, message):
    with pytest.raises(RecipeError, match=message):
        validate_recipe(raw)
