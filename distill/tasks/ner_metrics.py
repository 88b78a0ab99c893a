"""Entity-level scores for named-entity recognition, as the CoNLL-2003 shared task reports them.

Tjong Kim Sang & De Meulder (2003), "Introduction to the CoNLL-2003 Shared Task: Language-Independent
Named Entity Recognition", score a system by micro-averaged precision, recall and F1 over entities:
a predicted entity counts only when its span and its type both match a gold entity exactly. Token
accuracy would be dominated by ``O`` and says little; this is the number papers compare.

Scores come from ``seqeval`` (:func:`entity_scores`): BIO tags read as the shared task's ``conlleval``
script reads them (an ``I-X`` that does not continue an entity of type X starts a new one), BIOES and
BMES strictly. ``tests/ner_reference.py`` holds an independent hand-written count they are tested against.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

IGNORE_INDEX = -100  # the label on special tokens, continuation word pieces and padding


def word_tags_from_logits(logits: Tensor, labels: Tensor, label_names: Sequence[str]) -> list[list[str]]:
    """Predicted word-level tags per sentence: the argmax tag at each position whose label is not -100.

    ``labels`` are those of ``distill.data.text.TokenTaggingDataset`` after collation: the first word
    piece of each word holds a tag id, everything else -100, so the result has one tag per word that
    survived truncation, in word order, ready for :func:`entity_scores`.
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits (batch, length, classes) and labels (batch, length); "
            f"got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if logits.shape[-1] != len(label_names):
        raise ValueError(f"logits have {logits.shape[-1]} classes but there are {len(label_names)} label names")
    predictions = logits.detach().argmax(dim=-1).cpu()
    keep = (labels != IGNORE_INDEX).cpu()
    names = list(label_names)
    return [[names[i] for i in row[mask].tolist()] for row, mask in zip(predictions, keep, strict=True)]


def extend_with_o(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> list[list[str]]:
    """Predictions completed with ``O`` up to each gold sentence's length.

    Words cut off by the tokenizer's ``max_length`` get no prediction; scoring them as ``O`` keeps
    every gold entity in the count (as a miss), so the F1 is that of the full test set.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted sentences")
    completed: list[list[str]] = []
    for index, (predicted_tags, gold_tags) in enumerate(zip(predicted, gold, strict=True)):
        if len(predicted_tags) > len(gold_tags):
            raise ValueError(f"sentence {index}: {len(predicted_tags)} predicted tags for {len(gold_tags)} words")
        completed.append([*predicted_tags, *["O"] * (len(gold_tags) - len(predicted_tags))])
    return completed


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], scheme: str = "BIO") -> dict:
    """Micro precision, recall and F1 over entities with ``seqeval``, for the tag scheme in use.

    BIO is read as conlleval reads it (seqeval's default mode); BIOES
    and BMES (BIOES with ``M-`` for inside) are read strictly: an entity is a well-formed B…E or S span.
    """
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOBES

    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted sentences")
    if scheme == "BMES":
        gold, predicted = _bmes_as_bioes(gold), _bmes_as_bioes(predicted)
    options = {} if scheme == "BIO" else {"mode": "strict", "scheme": IOBES}
    gold, predicted = [list(row) for row in gold], [list(row) for row in predicted]
    if not any(tag != "O" for row in gold + predicted for tag in row):
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}  # seqeval has nothing to average
    return {
        name: float(score(gold, predicted, zero_division=0, **options))
        for name, score in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score))
    }


def _bmes_as_bioes(rows: Sequence[Sequence[str]]) -> list[list[str]]:
    return [["I" + tag[1:] if tag.startswith("M-") else tag for tag in row] for row in rows]
