"""Deep Mutual Learning and Be-Your-Own-Teacher self-distillation: losses by hand, gradients, Trainer, resume."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from distill.core.batch import Batch
from distill.data import random_shift
from distill.models import MLP
from distill.strategies.mutual import MutualObjective, mutual_losses
from distill.strategies.self_distill import (
    ExitHead,
    ExitOutputs,
    MultiExitNetwork,
    SelfDistillationObjective,
    multi_exit_cnn1d,
    multi_exit_mlp,
    self_distillation_losses,
)
from distill.train import Trainer
from distill.train.checkpoint import load_module_weights
from distill.train.resume import latest_checkpoint
from distill.train.settings import TrainSettings
from tests.interrupt import killed_after_epoch

# ---------------------------------------------------------------- the formulas, written out


def _ce(logits, labels):
    return -torch.log_softmax(logits, dim=-1)[torch.arange(len(labels)), labels].mean()


def _kl(target_logits, student_logits, temperature):
    """T² · KL(softmax(target/T) ‖ softmax(student/T)), summed over classes, mean over the batch."""
    p = torch.softmax(target_logits / temperature, dim=-1)
    log_q = torch.log_softmax(student_logits / temperature, dim=-1)
    return temperature**2 * (p * (torch.log(p) - log_q)).sum(-1).mean()


def _soft_ce(target_logits, student_logits, temperature):
    p = torch.softmax(target_logits / temperature, dim=-1)
    return -(p * torch.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


# ---------------------------------------------------------------- Deep Mutual Learning


def _peers(count=3, classes=5, features=6):
    torch.manual_seed(4)
    return [nn.Sequential(nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, classes)) for _ in range(count)]


@pytest.mark.parametrize(("temperature", "kl_weight"), [(1.0, 1.0), (2.0, 0.5)])
def test_dml_loss_equals_the_formula(temperature, kl_weight):
    peers = _peers()
    objective = MutualObjective(peers, temperature=temperature, kl_weight=kl_weight)
    x, y = torch.randn(4, 6), torch.tensor([0, 3, 1, 4])
    terms = objective.losses(objective.trainable, Batch(x, y))
    z = [peer(x) for peer in peers]
    expected_total = 0.0
    for i in range(3):
        ce = _ce(z[i], y)
        kl = sum(_kl(z[j], z[i], temperature) for j in range(3) if j != i) / 2
        assert torch.allclose(terms[f"peer{i}_ce"], ce, atol=1e-6)
        assert torch.allclose(terms[f"peer{i}_kl"], kl, atol=1e-6)
        expected_total = expected_total + ce + kl_weight * kl
    assert torch.allclose(terms["total"], expected_total, atol=1e-6)
    assert set(terms) == {"total"} | {f"peer{i}_{kind}" for i in range(3) for kind in ("ce", "kl")}


def test_a_peers_kl_term_trains_that_peer_only():
    peers = _peers()
    objective = MutualObjective(peers)
    terms = objective.losses(objective.trainable, Batch(torch.randn(4, 6), torch.tensor([0, 3, 1, 4])))
    terms["peer1_kl"].backward()
    for index, peer in enumerate(peers):
        grads = [p.grad for p in peer.parameters()]
        if index == 1:
            assert all(g is not None and g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None or not g.any() for g in grads), index


def test_dml_total_gradient_of_a_peer_is_its_own_loss_gradient():
    # The simultaneous update gives each peer exactly the gradient of L_i (the others' predictions are targets).
    peers = _peers(count=2)
    objective = MutualObjective(peers)
    x, y = torch.randn(4, 6), torch.tensor([0, 3, 1, 4])
    objective.losses(objective.trainable, Batch(x, y))["total"].backward()
    together = [p.grad.clone() for p in peers[0].parameters()]
    for p in objective.trainable.parameters():
        p.grad = None
    z0, z1 = peers[0](x), peers[1](x).detach()
    (_ce(z0, y) + _kl(z1, z0, 1.0)).backward()
    for a, p in zip(together, peers[0].parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_dml_predicts_with_the_eval_peer_and_can_predict_with_each():
    peers = _peers()
    objective = MutualObjective(peers, eval_peer=2)
    x = torch.randn(3, 6)
    assert torch.equal(objective.predict(objective.trainable, x), peers[2](x))
    assert torch.equal(objective.predict(objective.trainable, x, peer=0), peers[0](x))
    every = objective.predict_all(objective.trainable, x)
    assert len(every) == objective.num_peers == 3 and all(
        torch.equal(z, p(x)) for z, p in zip(every, peers, strict=True)
    )
    assert objective.peer(1) is peers[1]
    parts = objective.parts(objective.trainable)
    assert parts["model"] is peers[2] and [parts[f"peer{i}"] for i in range(3)] == peers


def test_dml_rejects_bad_peers():
    with pytest.raises(ValueError, match="at least 2 peer"):
        MutualObjective(_peers(count=1))
    peer = _peers(count=1)[0]
    with pytest.raises(ValueError, match="peer 1 is the same module as peer 0"):
        MutualObjective([peer, peer])
    with pytest.raises(ValueError, match="eval_peer"):
        MutualObjective(_peers(count=2), eval_peer=2)
    mismatched = MutualObjective([MLP((6,), [8], 10), MLP((6,), [8], 5)])
    with pytest.raises(ValueError, match=r"peer0 \(4, 10\), peer1 \(4, 5\).*num_classes"):
        mismatched.losses(mismatched.trainable, Batch(torch.randn(4, 6), torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ValueError, match="at least 2 peers"):
        mutual_losses([torch.randn(2, 3)], torch.zeros(2, dtype=torch.long))


def test_dml_warns_when_peers_start_identical():
    first = _peers(count=1)[0]
    copy = _peers(count=1)[0]  # same seed: same weights
    with pytest.warns(UserWarning, match="identical weights"):
        MutualObjective([first, copy])


# ---------------------------------------------------------------- Be Your Own Teacher


def _exit_outputs(exits=3, classes=5, width=6):
    torch.manual_seed(5)
    logits = [torch.randn(4, classes, requires_grad=True) for _ in range(exits)]
    features = [torch.randn(4, width, requires_grad=True) for _ in range(exits)]
    return ExitOutputs(logits, features)


@pytest.mark.parametrize("exits", [2, 3])
@pytest.mark.parametrize("response_loss", ["kd", "soft_ce"])
def test_byot_loss_equals_the_formula(exits, response_loss):
    outputs = _exit_outputs(exits)
    y = torch.tensor([1, 0, 4, 2])
    alpha, weight, temperature = 0.3, 0.2, 3.0
    terms = self_distillation_losses(outputs, y, alpha, weight, temperature, response_loss)
    z, f = outputs
    soft = _kl if response_loss == "kd" else _soft_ce
    expected = _ce(z[-1], y)
    for i in range(exits - 1):
        ce = _ce(z[i], y)
        kd = soft(z[-1], z[i], temperature)
        hint = ((f[i] - f[-1]) ** 2).mean()
        assert torch.allclose(terms[f"exit{i}_ce"], ce, atol=1e-6)
        assert torch.allclose(terms[f"exit{i}_kd"], kd, atol=1e-6)
        assert torch.allclose(terms[f"exit{i}_feature"], hint, atol=1e-6)
        expected = expected + (1 - alpha) * ce + alpha * kd + weight * hint
    assert torch.allclose(terms[f"exit{exits - 1}_ce"], _ce(z[-1], y), atol=1e-6)
    assert torch.allclose(terms["total"], expected, atol=1e-6)


def test_byot_objective_uses_the_network_outputs():
    torch.manual_seed(2)
    network = multi_exit_mlp((1, 8, 8), [12, 10, 8], 10)
    objective = SelfDistillationObjective(network, alpha=0.5, feature_weight=0.1, temperature=2.0)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([1, 2, 3, 9])
    terms = objective.losses(network, Batch(x, y))
    assert torch.allclose(terms["total"], self_distillation_losses(network(x), y, 0.5, 0.1, 2.0)["total"])
    assert [z.shape for z in network(x).features] == [torch.Size([4, 8])] * 3


def test_the_deepest_exit_is_a_detached_teacher():
    torch.manual_seed(2)
    network = multi_exit_mlp((1, 8, 8), [12, 10], 10)
    objective = SelfDistillationObjective(network)
    batch = Batch(torch.randn(4, 1, 8, 8), torch.tensor([1, 2, 3, 9]))
    deep_only = [*network.blocks[1].parameters(), *network.exits[1].parameters()]
    for name in ("exit0_kd", "exit0_feature"):
        network.zero_grad(set_to_none=True)
        objective.losses(network, batch)[name].backward()
        assert all(p.grad is None or not p.grad.any() for p in deep_only), name
        # the shallow exit and the shared first block do learn from it
        assert network.blocks[0][1].weight.grad.abs().sum() > 0
        assert network.exits[0].bottleneck.fc.weight.grad.abs().sum() > 0


def test_byot_predicts_with_any_exit_running_only_the_blocks_it_needs():
    torch.manual_seed(3)
    network = multi_exit_cnn1d((40,), [4, 6, 8], 10)
    x = torch.randn(5, 40)
    network.eval()
    outputs = network(x)
    assert len(outputs.logits) == 3 and all(z.shape == (5, 10) for z in outputs.logits)
    objective = SelfDistillationObjective(network)
    assert torch.equal(objective.predict(network, x), outputs.logits[-1])
    assert torch.equal(objective.predict(network, x, exit_index=0), outputs.logits[0])
    calls = []
    network.blocks[2].register_forward_hook(lambda *args: calls.append(1))
    objective.predict(network, x, exit_index=1)
    assert not calls
    assert all(torch.equal(a, b) for a, b in zip(objective.predict_all(network, x), outputs.logits, strict=True))
    assert SelfDistillationObjective(network, exit_index=0).predict(network, x).equal(outputs.logits[0])


def test_byot_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 exits"):
        SelfDistillationObjective(multi_exit_mlp((4,), [8], 3))
    with pytest.raises(ValueError, match="exit_index"):
        SelfDistillationObjective(multi_exit_mlp((4,), [8, 8], 3), exit_index=2)
    with pytest.raises(ValueError, match="alpha must be in"):
        self_distillation_losses(_exit_outputs(), torch.zeros(4, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError, match="response_loss"):
        SelfDistillationObjective(multi_exit_mlp((4,), [8, 8], 3), response_loss="mse")
    blocks = [nn.Linear(4, 8), nn.Linear(8, 6)]
    heads = [ExitHead(nn.Identity(), 8, 3), ExitHead(nn.Identity(), 6, 3)]  # exit 0 is 8 wide, not 6
    objective = SelfDistillationObjective(MultiExitNetwork(blocks, heads=heads))
    with pytest.raises(ValueError, match=r"exit 0's feature has shape \(2, 8\).*\(2, 6\)"):
        objective.losses(objective.trainable, Batch(torch.randn(2, 4), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(ValueError, match="num_classes and input_shape"):
        MultiExitNetwork(blocks, num_classes=3)


# ---------------------------------------------------------------- with the real Trainer


@pytest.fixture(scope="module")
def small_digits(digits):
    images, labels = digits.train.tensors
    return TensorDataset(images[:320], labels[:320]), ("test", TensorDataset(*(t[:200] for t in digits.test.tensors)))


def _settings() -> TrainSettings:
    return TrainSettings.model_validate(
        {
            "epochs": 3,
            "batch_size": 32,
            "optimizer": {"name": "adamw", "lr": 0.03},
            "lr_schedule": {"name": "cosine", "warmup_steps": 3},
            "log_every": 2,
            "keep_checkpoints": 3,
            "grad_clip": 1.0,
            "max_norm": 3.0,
        }
    )


def _mutual():
    torch.manual_seed(1)
    first = MLP((1, 8, 8), [16], 10, dropout=0.2)
    torch.manual_seed(2)
    second = MLP((1, 8, 8), [24, 12], 10)
    return MutualObjective([first, second], temperature=2.0, eval_peer=1)


def _self_distill():
    torch.manual_seed(1)
    return SelfDistillationObjective(multi_exit_mlp((1, 8, 8), [48, 32, 24], 10, dropout=0.1))


def _trainer(objective, data, run_dir):
    train, evaluation = data
    return Trainer(
        objective,
        train,
        evaluation,
        _settings(),
        run_dir,
        seed=7,
        show_progress=False,
        input_transform=functools.partial(random_shift, max_shift=1),
    )


def _epoch_records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == "epoch"]


@pytest.mark.parametrize("build", [_mutual, _self_distill], ids=["mutual", "self_distill"])
def test_training_learns_and_resumes_to_the_same_weights(tmp_path, small_digits, monkeypatch, build):
    uninterrupted = build()
    _trainer(uninterrupted, small_digits, tmp_path / "a").fit()
    epochs = _epoch_records(tmp_path / "a")
    # Learning is slow in 30 steps on raw digits (a supervised MLP of this depth is at ~20% too), so the check
    # is that both the training loss and the evaluated network's test loss go down.
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[-1]["eval_loss"] < epochs[0]["eval_loss"], [r["eval_loss"] for r in epochs]

    interrupted = build()
    with killed_after_epoch(monkeypatch, 1):
        _trainer(interrupted, small_digits, tmp_path / "b").fit()

    torch.manual_seed(123)  # a different process state: resume must not depend on it
    resumed = build()
    _trainer(resumed, small_digits, tmp_path / "b").fit(resume=True)
    final_a, final_b = uninterrupted.trainable.state_dict(), resumed.trainable.state_dict()
    assert final_a.keys() == final_b.keys()
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name
    assert [r["epoch"] for r in _epoch_records(tmp_path / "b")] == [0, 1, 2]


def test_each_dml_peer_is_saved_alone(tmp_path, small_digits):
    objective = _mutual()
    _trainer(objective, small_digits, tmp_path).fit()
    folder = latest_checkpoint(tmp_path / "checkpoints")
    bare = MLP((1, 8, 8), [16], 10)
    load_module_weights(bare, folder / "peer0.safetensors")
    deployed = MLP((1, 8, 8), [24, 12], 10)
    load_module_weights(deployed, folder)  # model.safetensors: the eval peer
    for module, trained in ((bare, objective.peer(0)), (deployed, objective.peer(1))):
        for a, b in zip(module.state_dict().values(), trained.state_dict().values(), strict=True):
            assert torch.equal(a, b)
