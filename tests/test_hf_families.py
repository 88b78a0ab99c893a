"""Every supported encoder family, on a tiny random config (no download): layer names with their shapes,
and a student shrunk from the teacher's layers; an unsupported family is named in the error."""

from __future__ import annotations

import pytest
import torch
import transformers

from distill.capture import layout_of, open_capture
from distill.models.hf.student import student_from_teacher

COMMON = {"vocab_size": 100, "num_labels": 3, "max_position_embeddings": 64}
BERT_LIKE = {"hidden_size": 16, "num_hidden_layers": 4, "num_attention_heads": 2, "intermediate_size": 32}
FAMILIES = {
    "bert": (transformers.BertConfig, BERT_LIKE),
    "roberta": (transformers.RobertaConfig, BERT_LIKE),
    "xlm-roberta": (transformers.XLMRobertaConfig, BERT_LIKE),
    "electra": (transformers.ElectraConfig, {**BERT_LIKE, "embedding_size": 16}),
    "distilbert": (transformers.DistilBertConfig, {"dim": 16, "n_layers": 4, "n_heads": 2, "hidden_dim": 32}),
    "deberta-v2": (transformers.DebertaV2Config, BERT_LIKE),
}
HEADS = [transformers.AutoModelForSequenceClassification, transformers.AutoModelForTokenClassification]


def _model(family: str, head) -> torch.nn.Module:
    config_class, options = FAMILIES[family]
    torch.manual_seed(0)
    return head.from_config(config_class(**COMMON, **options, attn_implementation="eager")).eval()


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("head", HEADS, ids=["sequence", "token"])
def test_layer_names_and_students_for_every_family(family, head):
    model = _model(family, head)
    inputs = {"input_ids": torch.randint(5, 100, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    names = ["hidden:0", "hidden:4", "values:2", "logits"]
    if family != "deberta-v2":  # disentangled attention: refused with its own message (below)
        names += ["attention:3", "scores:1"]
    with torch.no_grad(), open_capture(model, names, detach=True) as captured:
        output = model(**inputs)
    assert captured["logits"].shape == output.logits.shape
    assert captured["hidden:4"].shape == (2, 7, 16) and captured["values:2"].shape == (2, 2, 7, 8)
    if "attention:3" in names:
        assert torch.allclose(captured["attention:3"].sum(-1), torch.ones(2, 2, 7), atol=1e-5)
        assert captured["scores:1"].shape == (2, 2, 7, 7)
    student = student_from_teacher(model, 2, "uniform")
    assert layout_of(student).num_layers == 2 and student(**inputs).logits.shape == output.logits.shape


def test_deberta_attention_and_unsupported_families_are_refused_by_name():
    deberta = _model("deberta-v2", HEADS[0])
    with pytest.raises(ValueError, match=r"attention:1: this model's attention \(DeBERTa"):
        open_capture(deberta, ["attention:1"])
    config = transformers.ModernBertConfig(
        **COMMON, **BERT_LIKE, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2
    )
    modern = transformers.ModernBertForSequenceClassification(config)
    with pytest.raises(ValueError, match=r"ModernBERT, is not supported\); supported: BERT-family .*DeBERTa-v2"):
        layout_of(modern)
