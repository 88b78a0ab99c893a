"""The Distiller with the method zoo: layer lists, options, response options, stages, index-aware data."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from distill.core.batch import Batch
from distill.core.distiller import Distiller, FeatureMatch
from distill.core.method import BuildContext
from distill.data.indexed import WithIndex
from distill.losses import dkd_loss, hidden_mse_loss
from distill.models import MLP, SmallCNN
from distill.train import Trainer
from distill.train.settings import TrainSettings
from tests.interrupt import killed_after_epoch

INPUT_SHAPE = (1, 8, 8)


def _batch(size: int = 6) -> Batch:
    return Batch(torch.rand(size, *INPUT_SHAPE), torch.randint(0, 10, (size,)))


def test_a_multi_layer_match_gives_one_weighted_term_per_pair():
    teacher, student = MLP(INPUT_SHAPE, [32, 24], 10), MLP(INPUT_SHAPE, [12, 12], 10)
    batch = _batch()
    match = FeatureMatch(["relu1", "relu2"], ["relu1", "relu2"], "hidden_mse", weight=[1.0, 0.5], connector="linear")
    distiller = Distiller(teacher, student, None, matches=[match], sample_inputs=batch.inputs)
    terms = distiller.losses(distiller.trainable, batch)
    pair_names = ["hidden_mse:relu1->relu1", "hidden_mse:relu2->relu2"]
    assert set(terms) == {*pair_names, "total"}
    assert torch.allclose(terms["total"], terms[pair_names[0]] + 0.5 * terms[pair_names[1]])
    with torch.no_grad():  # each term by hand: the connector of that pair, then plain MSE
        hidden = {}
        x = batch.inputs.flatten(1)
        for layer in ("1", "2"):
            x = torch.relu(getattr(teacher, f"fc{layer}")(x))
            hidden[layer] = x
        s1 = torch.relu(student.fc1(batch.inputs.flatten(1)))
        expected = ((distiller.trainable.connectors["match0"](s1) - hidden["1"]) ** 2).mean()
    assert torch.allclose(terms[pair_names[0]], expected)


def test_mismatched_layer_lists_and_weights_are_named():
    teacher, student = MLP(INPUT_SHAPE, [32, 24], 10), MLP(INPUT_SHAPE, [12, 12], 10)
    with pytest.raises(ValueError, match="2 student layer"):
        Distiller(teacher, student, matches=[FeatureMatch(["relu1", "relu2"], ["relu1"])])
    with pytest.raises(ValueError, match="3 weights for 2 layer pairs"):
        Distiller(teacher, student, matches=[FeatureMatch(["relu1", "relu2"], ["relu1", "relu2"], weight=[1, 2, 3])])


def test_options_reach_the_loss_and_unknown_ones_are_refused():
    teacher, student = MLP(INPUT_SHAPE, [32], 10), MLP(INPUT_SHAPE, [12], 10)
    batch = _batch(8)
    plain = Distiller(
        teacher, student, None, matches=[FeatureMatch("relu1", "relu1", "cc")], sample_inputs=batch.inputs
    )
    tuned = Distiller(
        teacher,
        student,
        None,
        matches=[FeatureMatch("relu1", "relu1", "cc", options={"gamma": 2.0})],
        sample_inputs=batch.inputs,
    )
    assert not torch.allclose(
        plain.losses(plain.trainable, batch)["total"], tuned.losses(tuned.trainable, batch)["total"]
    )
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['gama'\] for loss 'cc'; it accepts: .*gamma"):
        Distiller(
            teacher,
            student,
            matches=[FeatureMatch("relu1", "relu1", "cc", options={"gama": 1})],
            sample_inputs=batch.inputs,
        )


def test_shape_mistakes_of_a_loss_function_fail_when_the_distiller_is_built():
    teacher, student = MLP(INPUT_SHAPE, [32], 10), MLP(INPUT_SHAPE, [12], 10)
    with pytest.raises(ValueError, match=r"hidden_mse:relu1->relu1.*\(6, 12\).*\(6, 32\)"):
        Distiller(teacher, student, matches=[FeatureMatch("relu1", "relu1")], sample_inputs=_batch().inputs)


def test_response_options_and_labels_reach_dkd():
    teacher, student = MLP(INPUT_SHAPE, [32], 10), MLP(INPUT_SHAPE, [12], 10)
    batch = _batch()
    distiller = Distiller(teacher, student, "dkd", temperature=2.0, response_options={"alpha": 0.5, "beta": 3.0})
    terms = distiller.losses(distiller.trainable, batch)
    with torch.no_grad():
        expected = dkd_loss(student(batch.inputs), teacher(batch.inputs), batch.labels, 0.5, 3.0, 2.0)
    assert torch.allclose(terms["dkd"], expected)
    with pytest.raises(ValueError, match="unknown option"):
        Distiller(teacher, student, "dkd", response_options={"gamma": 1.0})


def _ft_distiller(teacher):
    torch.manual_seed(3)
    student = SmallCNN(INPUT_SHAPE, [4, 8], 10)
    match = FeatureMatch("block2", "block2", "ft", weight=2.0, pretrain_epochs=1)
    return Distiller(teacher, student, "kd", matches=[match], sample_inputs=torch.rand(4, *INPUT_SHAPE))


@pytest.fixture(scope="module")
def tiny_digits(digits):
    images, labels = digits.train.tensors
    return TensorDataset(images[:192], labels[:192]), ("test", TensorDataset(*(t[:64] for t in digits.test.tensors)))


def _fit(distiller, data, run_dir, epochs=2, resume=False):
    settings = TrainSettings(epochs=epochs, batch_size=32, optimizer={"name": "adamw", "lr": 0.01})
    trainer = Trainer(distiller, data[0], data[1], settings, run_dir, seed=5, show_progress=False)
    return trainer.fit(resume=resume)


def test_a_pretraining_stage_runs_first_and_leaves_the_student_alone(tmp_path, tiny_digits):
    teacher = SmallCNN(INPUT_SHAPE, [8, 16], 10)
    distiller = _ft_distiller(teacher)
    assert [(stage.name, stage.epochs) for stage in distiller.stages()] == [("pretrain", 1)]
    student_before = {k: v.clone() for k, v in distiller.trainable.student.state_dict().items()}
    stage = distiller.stages()[0]
    Trainer(
        stage.objective,
        tiny_digits[0],
        None,
        TrainSettings(epochs=1, batch_size=32),
        tmp_path / "s",
        show_progress=False,
    ).fit()
    for name, value in distiller.trainable.student.state_dict().items():
        assert torch.equal(value, student_before[name]), name  # FT's stage never runs the student
    _fit(_ft_distiller(teacher), tiny_digits, tmp_path / "run")
    assert (tmp_path / "run" / "stage-pretrain" / "metrics.jsonl").is_file()
    assert (tmp_path / "run" / "checkpoints" / "latest.json").is_file()


def test_resume_with_a_stage_ends_with_the_same_weights(tmp_path, tiny_digits, monkeypatch):
    teacher = SmallCNN(INPUT_SHAPE, [8, 16], 10)
    uninterrupted = _ft_distiller(teacher)
    _fit(uninterrupted, tiny_digits, tmp_path / "a")
    with killed_after_epoch(monkeypatch, 0, where=lambda run_dir: "stage-" not in run_dir):
        _fit(_ft_distiller(teacher), tiny_digits, tmp_path / "b")
    resumed = _ft_distiller(teacher)
    _fit(resumed, tiny_digits, tmp_path / "b", resume=True)
    a, b = uninterrupted.trainable.state_dict(), resumed.trainable.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_crd_trains_through_the_same_trainer_with_indexed_data(tmp_path, tiny_digits):
    teacher = SmallCNN(INPUT_SHAPE, [8, 16], 10)
    student = SmallCNN(INPUT_SHAPE, [4, 8], 10)
    train = tiny_digits[0]
    context = BuildContext(num_examples=len(train), num_classes=10, train_labels=train.tensors[1])
    distiller = Distiller(
        teacher,
        student,
        None,
        hard_weight=1.0,
        matches=[FeatureMatch("flatten", "flatten", "crd", weight=0.8, options={"feat_dim": 16, "nce_k": 32})],
        sample_inputs=train.tensors[0][:4],
        build_context=context,
    )
    assert distiller.needs_index
    memory_before = distiller.trainable.methods["match0"].memory_student.clone()
    record = _fit(distiller, (WithIndex(train), tiny_digits[1]), tmp_path / "crd", epochs=1)
    assert record["train_loss"] > 0
    assert not torch.equal(distiller.trainable.methods["match0"].memory_student, memory_before)
    saved = tmp_path / "crd" / "checkpoints" / "epoch-0000" / "methods.safetensors"
    assert saved.is_file()  # the memory bank is checkpointed with the student


def test_function_terms_match_the_plain_function(tiny_digits):
    teacher, student = MLP(INPUT_SHAPE, [16], 10), MLP(INPUT_SHAPE, [16], 10)
    batch = _batch()
    distiller = Distiller(teacher, student, None, matches=[FeatureMatch("relu1", "relu1")], sample_inputs=batch.inputs)
    with torch.no_grad():
        expected = hidden_mse_loss(
            torch.relu(student.fc1(batch.inputs.flatten(1))), torch.relu(teacher.fc1(batch.inputs.flatten(1)))
        )
    assert torch.allclose(distiller.losses(distiller.trainable, batch)["total"], expected)
