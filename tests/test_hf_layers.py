"""Transformer layers by index, layer maps and students shrunk from teachers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.capture import LayerCapture
from distill.models.hf import layer_pairs, layout_of, map_layers, student_from_teacher
from tests.hf_models import tiny_bert, tiny_inputs


def test_layer_names_match_hugging_face_outputs():
    model = tiny_bert()
    inputs = tiny_inputs()
    names = ["hidden:0", "hidden:4", "hidden:-1", "attention:2", "scores:2", "values:-1", "logits"]
    with torch.no_grad(), LayerCapture(model, names) as captured:
        out = model(**inputs, output_hidden_states=True, output_attentions=True)
    assert torch.equal(captured["hidden:0"], out.hidden_states[0])
    assert torch.equal(captured["hidden:4"], out.hidden_states[4])
    assert torch.equal(captured["hidden:-1"], out.hidden_states[4])
    assert torch.equal(captured["attention:2"], out.attentions[2])
    assert torch.equal(captured["logits"], out.logits)
    assert captured["values:-1"].shape == (3, 2, 7, 8)
    # Scores are pre-softmax: softmax over the valid keys gives back the attention probabilities.
    scores = captured["scores:2"].masked_fill(inputs["attention_mask"][:, None, None, :] == 0, float("-inf"))
    assert torch.allclose(scores.softmax(-1), out.attentions[2], atol=1e-6)


def test_value_vectors_are_the_value_projection_split_into_heads():
    model = tiny_bert()
    inputs = tiny_inputs()
    with torch.no_grad(), LayerCapture(model, ["values:1", "hidden:1"]) as captured:
        model(**inputs)
    projected = model.bert.encoder.layer[1].attention.self.value(captured["hidden:1"])
    by_hand = projected.view(3, 7, 2, 8).permute(0, 2, 1, 3)
    assert torch.allclose(captured["values:1"], by_hand)


def test_bad_layer_names_say_what_is_valid():
    model = tiny_bert()
    with pytest.raises(ValueError, match=r"K in 0\.\.4 \(0 = embeddings"):
        LayerCapture(model, ["hidden:5"])
    with pytest.raises(ValueError, match=r"K in 0\.\.3"):
        LayerCapture(model, ["attention:4"])
    with pytest.raises(ValueError, match="not a Hugging Face transformer"):
        LayerCapture(nn.Sequential(nn.Linear(2, 2)), ["hidden:1"])


def test_attention_needs_eager_attention():
    model = tiny_bert(attn_implementation="sdpa")
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        LayerCapture(model, ["attention:0"])
    LayerCapture(model, ["scores:0", "hidden:1"])  # recomputed from projections: no eager needed


def test_hooks_are_removed_on_exit():
    model = tiny_bert()
    with LayerCapture(model, ["hidden:1", "attention:0"]):
        pass
    assert all(not module._forward_hooks for module in model.modules())


@pytest.mark.parametrize(
    ("student", "teacher", "strategy", "expected"),
    [
        (6, 12, "skip", [1, 3, 5, 7, 9, 11]),
        (6, 12, "uniform", [0, 2, 4, 7, 9, 11]),  # DistilBERT's initialisation
        (4, 12, "skip", [2, 5, 8, 11]),  # TinyBERT: student m <- teacher 3m (1-based)
        (3, 6, "last", [3, 4, 5]),
        (3, 6, "uniform", [0, 2, 5]),
        (4, 6, "skip", [0, 2, 3, 5]),
        (2, 6, [0, 4], [0, 4]),
    ],
)
def test_layer_maps(student, teacher, strategy, expected):
    assert map_layers(student, teacher, strategy) == expected


def test_layer_map_errors():
    with pytest.raises(ValueError, match=r"use 1\.\.6 student layers"):
        map_layers(7, 6)
    with pytest.raises(ValueError, match="needs 2 distinct"):
        map_layers(2, 6, [1, 1])
    with pytest.raises(ValueError, match="outside"):
        map_layers(2, 6, [0, 6])
    with pytest.raises(ValueError, match="unknown layer-mapping strategy 'every'"):
        map_layers(2, 6, "every")


def test_layer_pairs_offset_hidden_states_by_the_embeddings():
    assert layer_pairs("hidden", 2, 4, "skip", include_embeddings=True) == (
        ["hidden:0", "hidden:1", "hidden:2"],
        ["hidden:0", "hidden:2", "hidden:4"],
    )
    assert layer_pairs("attention", 2, 4, "skip") == (["attention:0", "attention:1"], ["attention:1", "attention:3"])


def test_student_from_teacher_copies_the_mapped_layers():
    teacher = tiny_bert(layers=4)
    student = student_from_teacher(teacher, strategy=[0, 1]).eval()
    assert layout_of(student).num_layers == 2
    inputs = tiny_inputs()
    with torch.no_grad():
        t = teacher(**inputs, output_hidden_states=True)
        s = student(**inputs, output_hidden_states=True)
    for k in range(3):  # embeddings and the two copied bottom layers
        assert torch.equal(s.hidden_states[k], t.hidden_states[k])
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_each_copied_layer_reproduces_its_teacher_layer():
    teacher = tiny_bert(layers=4)
    student = student_from_teacher(teacher, 2, "skip").eval()  # layers 1 and 3
    for student_index, teacher_index in enumerate(map_layers(2, 4, "skip")):
        x = torch.randn(2, 5, 16)
        assert torch.equal(student.bert.encoder.layer[student_index](x), teacher.bert.encoder.layer[teacher_index](x))


def test_random_init_keeps_shapes_not_weights():
    teacher = tiny_bert(layers=4)
    student = student_from_teacher(teacher, 2, init="random", seed=3)
    again = student_from_teacher(teacher, 2, init="random", seed=3)
    assert not torch.equal(
        student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight
    )
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, again.bert.embeddings.word_embeddings.weight)
    assert student.bert.encoder.layer[0].attention.self.query.weight.shape == (16, 16)


def test_packaged_minilm_student_reproduces_the_copied_teacher_layers():
    from distill.models.hf.loading import load_classifier, load_tokenizer

    teacher = load_classifier("minilm", "sequence", 2).eval()
    tokenizer = load_tokenizer("minilm")
    assert layout_of(teacher).num_layers == 6 and teacher.config.hidden_size == 384
    student = student_from_teacher(teacher, 3, "uniform").eval()  # teacher layers 0, 2, 5
    inputs = tokenizer(["a gripping, funny film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        t = teacher(**inputs, output_hidden_states=True)
        s = student(**inputs, output_hidden_states=True)
        assert torch.equal(s.hidden_states[0], t.hidden_states[0])
        assert torch.allclose(s.hidden_states[1], t.hidden_states[1], atol=1e-6)  # layer 0 on the same input
        # The additive mask the encoder hands its layers: 0 on valid keys, the dtype's minimum on padding.
        mask = (1 - inputs["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
        for student_index, teacher_index in enumerate([0, 2, 5]):
            given = t.hidden_states[teacher_index]  # what teacher layer m sees
            expected = t.hidden_states[teacher_index + 1]
            produced = student.bert.encoder.layer[student_index](given, mask)
            valid = inputs["attention_mask"].bool()
            assert torch.allclose(produced[valid], expected[valid], atol=1e-5)


def test_loading_a_classifier_is_quiet_unless_more_than_the_head_is_new(tmp_path, capfd):
    """The new task head is expected and not reported; an encoder weight absent from the checkpoint is."""
    import warnings

    from safetensors.torch import load_file, save_file

    from distill.models.hf.loading import load_classifier
    from tests.hf_models import save_tiny_bert_folder

    folder = save_tiny_bert_folder(tmp_path / "bert")
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all for a complete encoder
        load_classifier(folder, "sequence", 2)
    printed = capfd.readouterr()
    assert "LOAD REPORT" not in printed.out + printed.err and "not sharded" not in printed.out + printed.err

    weights = tmp_path / "bert" / "model.safetensors"
    state = load_file(weights)
    dropped = next(key for key in state if "layer.1.output.dense.weight" in key)
    del state[dropped]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.warns(UserWarning, match=r"1 weights besides the new task head .*layer\.1\.output\.dense\.weight"):
        load_classifier(folder, "sequence", 2)
