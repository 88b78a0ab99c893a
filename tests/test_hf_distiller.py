"""Distilling Hugging Face models: layer-index matches, padding, teacher cache, token tasks."""

from __future__ import annotations

import torch

from distill.core.batch import Batch
from distill.core.cache import TeacherCache
from distill.core.distiller import Distiller, FeatureMatch
from distill.models.hf import layer_pairs, student_from_teacher
from tests.hf_models import tiny_bert, tiny_inputs

MATCHES = [
    FeatureMatch(*layer_pairs("hidden", 2, 4, "skip", include_embeddings=True), loss="hidden_mse", name="hidden"),
    FeatureMatch(*layer_pairs("scores", 2, 4, "skip"), loss="attention_mse", name="scores"),
    FeatureMatch(*layer_pairs("attention", 2, 4, "skip"), loss="attention_kl", name="attention"),
    FeatureMatch("values:-1", "values:-1", loss="value_relation", name="values"),
    FeatureMatch("hidden:2", "hidden:4", loss="pkd", name="pkd"),
]


def _distiller(task: str = "sequence", cache: TeacherCache | None = None, matches=MATCHES) -> Distiller:
    teacher = tiny_bert(task, layers=4)
    student = student_from_teacher(teacher, 2, "skip", init="random", seed=1)
    return Distiller(
        teacher, student, hard_weight=1.0, matches=matches, sample_inputs=tiny_inputs(), teacher_cache=cache
    )


def _batch(inputs, task: str = "sequence", index=None) -> Batch:
    labels = torch.tensor([0, 2, 1]) if task == "sequence" else torch.randint(0, 3, inputs["input_ids"].shape)
    if task == "token":
        labels = labels.masked_fill(inputs["attention_mask"] == 0, -100)
    return Batch(inputs, labels, index)


def test_every_term_is_finite_and_only_the_student_learns():
    distiller = _distiller()
    model = distiller.trainable
    terms = distiller.losses(model, _batch(tiny_inputs()))
    assert {"kd", "hard_ce", "scores[0]", "attention[1]", "values", "pkd", "hidden[2]"} <= set(terms)
    assert all(torch.isfinite(value) for value in terms.values())
    terms["total"].backward()
    assert all(p.grad is not None for p in model.student.parameters() if p.requires_grad and p.dim() > 1)
    assert all(p.grad is None for p in distiller.teacher.parameters())


def test_padding_never_contributes():
    """Changing the token ids at padded positions changes no loss term (the mask comes from the inputs)."""
    distiller = _distiller(task="token")
    inputs = tiny_inputs()
    other = dict(inputs)
    other["input_ids"] = torch.where(
        inputs["attention_mask"].bool(), inputs["input_ids"], torch.full_like(inputs["input_ids"], 7)
    )
    labels = _batch(inputs, "token").labels
    first = distiller.losses(distiller.trainable, Batch(inputs, labels))
    second = distiller.losses(distiller.trainable, Batch(other, labels))
    for name in first:
        assert torch.allclose(first[name], second[name], atol=1e-5), name


def test_teacher_cache_gives_the_live_teacher_outputs_under_any_padding():
    cache = TeacherCache()
    distiller = _distiller(task="token", cache=cache)
    inputs = tiny_inputs()
    index = torch.tensor([5, 6, 7])
    live = distiller.losses(distiller.trainable, _batch(inputs, "token", index))
    assert cache.misses == 1 and len(cache) == 3
    # The same examples, re-ordered and padded two positions further, come out of the cache.
    order = torch.tensor([2, 0, 1])
    wider = {k: torch.cat([v[order], torch.zeros(3, 2, dtype=v.dtype)], dim=1) for k, v in inputs.items()}
    labels = torch.cat([_batch(inputs, "token").labels[order], torch.full((3, 2), -100)], dim=1)
    logits, features = distiller.teacher_outputs(wider, None, Batch(wider, labels, index[order]))
    assert cache.hits == 1
    live_logits, live_features = distiller.teacher_outputs(wider)
    valid = wider["attention_mask"].bool()
    assert torch.allclose(logits[valid], live_logits[valid], atol=1e-5)
    for name, value in live_features.items():
        if name.startswith("hidden"):
            assert torch.allclose(features[name][valid], value[valid], atol=1e-5), name
    assert all(torch.isfinite(v) for v in live.values())


def test_token_classification_kd_ignores_unlabelled_pieces():
    distiller = _distiller(task="token", matches=[])
    inputs = tiny_inputs()
    batch = _batch(inputs, "token")
    batch.labels[0, 1] = -100  # a continuation piece
    terms = distiller.losses(distiller.trainable, batch)
    assert torch.isfinite(terms["hard_ce"]) and torch.isfinite(terms["kd"])
