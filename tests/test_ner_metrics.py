"""Entity-level F1: the hand-written reference count on hand-computed cases (conlleval's reading of BIO
tags), seqeval's scores (what runs report) equal to it on every case, and word-level predictions."""

from __future__ import annotations

import pytest
import torch

from distill.tasks.ner_metrics import entity_scores, extend_with_o, word_tags_from_logits
from tests.ner_reference import bio_entities, entity_f1

GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]  # PER 0-2, LOC 3-4 | ORG 0-1


def test_bio_entities_spans():
    assert bio_entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert bio_entities(["B-PER", "B-PER"]) == {("PER", 0, 1), ("PER", 1, 2)}
    assert bio_entities(["O", "B-MISC", "I-MISC", "I-MISC"]) == {("MISC", 1, 4)}
    assert bio_entities([]) == set() and bio_entities(["O", "O"]) == set()


def test_bio_entities_follow_conlleval_for_stray_i_tags():
    assert bio_entities(["I-PER", "I-PER"]) == {("PER", 0, 2)}  # at the start
    assert bio_entities(["O", "I-LOC", "O"]) == {("LOC", 1, 2)}  # after O
    assert bio_entities(["B-ORG", "I-PER", "I-PER"]) == {("ORG", 0, 1), ("PER", 1, 3)}  # after another type


def test_bad_tags_are_named():
    with pytest.raises(ValueError, match=r"tag 'X-PER' at position 1 is not 'O', 'B-<type>' or 'I-<type>'"):
        bio_entities(["O", "X-PER"])
    with pytest.raises(ValueError, match=r"tag 'B-' at position 0"):
        bio_entities(["B-"])


def test_perfect_predictions_score_one():
    assert entity_f1(GOLD, GOLD) == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "gold": 3,
        "predicted": 3,
        "correct": 3,
    }


def test_wrong_type_and_wrong_boundary_are_errors():
    wrong_type = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    scores = entity_f1(GOLD, wrong_type)
    assert (scores["gold"], scores["predicted"], scores["correct"]) == (3, 3, 2)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["f1"] == pytest.approx(2 / 3)
    wrong_boundary = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "I-ORG"]]
    scores = entity_f1(GOLD, wrong_boundary)
    assert (scores["predicted"], scores["correct"]) == (3, 1)
    assert scores["f1"] == pytest.approx(1 / 3)


def test_precision_and_recall_differ():
    # Gold: PER 0-2, LOC 3-4, ORG 0-1 (3). Predicted: PER 0-2, LOC 3-4, MISC 2-3, ORG 1-2 (4), 2 correct.
    predicted = [["B-PER", "I-PER", "B-MISC", "B-LOC"], ["O", "B-ORG"]]
    scores = entity_f1(GOLD, predicted)
    assert (scores["gold"], scores["predicted"], scores["correct"]) == (3, 4, 2)
    assert scores["precision"] == pytest.approx(1 / 2) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))  # 4/7


def test_i_without_b_matches_a_b_started_entity():
    scores = entity_f1([["O", "B-PER", "I-PER"]], [["O", "I-PER", "I-PER"]])
    assert scores["correct"] == 1 and scores["f1"] == 1.0


def test_empty_predictions_score_zero_without_dividing_by_zero():
    scores = entity_f1(GOLD, [["O"] * 4, ["O"] * 2])
    assert scores == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "gold": 3, "predicted": 0, "correct": 0}
    assert entity_f1([["O"]], [["O"]])["f1"] == 0.0
    assert entity_f1([], [])["f1"] == 0.0


def test_length_mismatches_name_the_sentence():
    with pytest.raises(ValueError, match=r"sentence 1: 2 gold tags but 3 predicted tags"):
        entity_f1(GOLD, [GOLD[0], ["O", "O", "O"]])
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted sentences"):
        entity_f1(GOLD, [GOLD[0]])


@pytest.mark.parametrize(
    "predicted",
    [
        GOLD,
        [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]],  # wrong type
        [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "I-ORG"]],  # wrong boundary
        [["B-PER", "I-PER", "B-MISC", "B-LOC"], ["O", "B-ORG"]],  # precision and recall differ
        [["I-PER", "I-PER", "O", "I-LOC"], ["I-ORG", "O"]],  # stray I- tags start entities
        [["O"] * 4, ["O"] * 2],  # nothing predicted
    ],
)
def test_seqeval_scores_equal_the_reference_count(predicted):
    expected = entity_f1(GOLD, predicted)
    scores = entity_scores(GOLD, predicted)
    assert scores == pytest.approx({name: expected[name] for name in ("precision", "recall", "f1")})


def test_word_tags_from_logits_reads_first_pieces_only():
    names = ["O", "B-PER", "I-PER"]
    # Row 0: [CLS] w0 ##piece w1 [SEP]; row 1: [CLS] w0 [SEP] pad pad.
    labels = torch.tensor([[-100, 1, -100, 0, -100], [-100, 2, -100, -100, -100]])
    argmax = torch.tensor([[0, 1, 2, 2, 0], [1, 0, 1, 1, 1]])
    logits = torch.nn.functional.one_hot(argmax, 3).float() * 5 - 1
    assert word_tags_from_logits(logits, labels, names) == [["B-PER", "I-PER"], ["O"]]
    with pytest.raises(ValueError, match=r"logits have 3 classes but there are 2 label names"):
        word_tags_from_logits(logits, labels, names[:2])
    with pytest.raises(ValueError, match=r"got \(2, 5, 3\) and \(2, 4\)"):
        word_tags_from_logits(logits, labels[:, :4], names)


def test_extend_with_o_completes_truncated_sentences():
    assert extend_with_o([["B-PER"], []], [["B-PER", "I-PER"], ["O"]]) == [["B-PER", "O"], ["O"]]
    with pytest.raises(ValueError, match="sentence 0: 2 predicted tags for 1 words"):
        extend_with_o([["O", "O"]], [["O"]])
