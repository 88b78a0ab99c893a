"""An independent, hand-written entity count for testing ``distill.tasks.ner_metrics.entity_scores``
(seqeval): CoNLL-2003's micro precision, recall and F1 over exact (span, type) matches, with BIO tags read
as ``conlleval`` reads them (``B-X`` starts an entity; an ``I-X`` that does not continue an entity of type
X, at the start, after ``O`` or after another type, starts one instead of being dropped)."""

from __future__ import annotations

from collections.abc import Sequence


def _parse(tag: str, position: int) -> tuple[str, str]:
    """(prefix, type) of a BIO tag; the error names the tag and where it is."""
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I") or not kind:
        raise ValueError(f"tag {tag!r} at position {position} is not 'O', 'B-<type>' or 'I-<type>'")
    return prefix, kind


def bio_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of one sentence as ``(type, start, end_exclusive)`` word spans, following conlleval.

    ``B-X`` starts an entity; ``I-X`` continues the current entity only if it has type X, otherwise
    it starts one (so ``O I-PER I-PER`` holds one PER entity, and ``B-ORG I-PER`` holds two).
    """
    entities: set[tuple[str, int, int]] = set()
    kind: str | None = None
    start = 0
    for position, tag in enumerate(tags):
        if tag == "O":
            if kind is not None:
                entities.add((kind, start, position))
            kind = None
            continue
        prefix, tag_kind = _parse(tag, position)
        if prefix == "B" or tag_kind != kind:
            if kind is not None:
                entities.add((kind, start, position))
            kind, start = tag_kind, position
    if kind is not None:
        entities.add((kind, start, len(tags)))
    return entities


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def entity_f1(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float | int]:
    """Micro precision, recall and F1 (fractions in 0..1) over all entities, with the counts.

    An entity is correct when its span and type match a gold entity exactly (CoNLL-2003). With no
    predicted (or no gold) entity the undefined ratio is 0, as conlleval reports it. Returns
    ``precision``, ``recall``, ``f1``, and the counts ``gold``, ``predicted``, ``correct``.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted sentences")
    gold_count = predicted_count = correct = 0
    for index, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(
                f"sentence {index}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted tags; "
                "score whole sentences (see extend_with_o for words lost to truncation)"
            )
        gold_entities = bio_entities(gold_tags)
        predicted_entities = bio_entities(predicted_tags)
        gold_count += len(gold_entities)
        predicted_count += len(predicted_entities)
        correct += len(gold_entities & predicted_entities)
    precision = _ratio(correct, predicted_count)
    recall = _ratio(correct, gold_count)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "gold": gold_count,
        "predicted": predicted_count,
        "correct": correct,
    }
