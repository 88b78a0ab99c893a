"""Causal-LM students by layer dropping, and LM data: KJV split, packing, prompt/completion masks (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from distill.lm.corpus import IGNORE, encode_pairs, next_token_targets, pack, read_kjv, read_texts, shifted_mask
from distill.lm.models import check_layer_choice, decoder_layers, drop_layers, uniform_layers
from distill.losses.lm import forward_kl_loss

KJV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kjv" / "kjv.jsonl"


def tiny_llama(layers: int = 5, vocab: int = 50, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return transformers.LlamaForCausalLM(config).eval()


def tiny_gpt2(layers: int = 4, vocab: int = 50, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_embd=16, n_layer=layers, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=1
    )
    return transformers.GPT2LMHeadModel(config).eval()


def test_uniform_layers_keep_the_ends_and_space_the_rest():
    assert uniform_layers(30, 6) == [0, 6, 12, 18, 24, 29]
    assert uniform_layers(12, 4) == [0, 4, 8, 11]
    assert uniform_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="cannot keep 7 of 6 layers"):
        uniform_layers(6, 7)


@pytest.mark.parametrize(
    ("layers", "message"), [([0, 9], r"layer\(s\) \[9\] out of range"), ([2, 1], "increasing"), ([], "non-empty")]
)
def test_a_bad_layer_choice_is_one_sentence(layers, message):
    with pytest.raises(ValueError, match=message):
        check_layer_choice(layers, 5)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_dropping_layers_copies_the_kept_blocks_and_generates(build):
    teacher = build()
    student = drop_layers(teacher, [0, -1])
    kept = decoder_layers(student)
    assert len(kept) == 2 and len(decoder_layers(teacher)) > 2
    last = decoder_layers(teacher)[-1]
    for (name, a), b in zip(kept[1].state_dict().items(), last.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert student.config.num_hidden_layers == 2
    # weights are copies: training the student leaves the teacher alone
    first = next(kept[0].parameters())
    with torch.no_grad():
        first.add_(1.0)
    assert not torch.equal(first, next(decoder_layers(teacher)[0].parameters()))
    ids = torch.randint(2, 50, (2, 6))
    out = student.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, pad_token_id=1)
    assert out.shape == (2, 10)


def test_kept_llama_layers_are_renumbered_for_the_kv_cache():
    student = drop_layers(tiny_llama(layers=5), [1, 3, 4])
    assert [block.self_attn.layer_idx for block in decoder_layers(student)] == [0, 1, 2]
    ids = torch.randint(2, 50, (1, 5))
    cached = student.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=1)
    uncached = student.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=1, use_cache=False)
    assert torch.equal(cached, uncached)


def test_packing_joins_documents_with_the_separator_and_drops_the_tail():
    blocks = pack([[5, 6, 7], [8], [9, 10, 11, 12]], block_size=4, separator=1)
    assert blocks.input_ids.tolist() == [[5, 6, 7, 1], [8, 1, 9, 10]]
    assert torch.equal(blocks.labels, blocks.input_ids)
    assert blocks.scored_tokens == 6  # 3 predictions per block of 4
    with pytest.raises(ValueError, match="fewer than one block"):
        pack([[1, 2]], block_size=8, separator=None)


def test_prompt_and_padding_are_never_scored():
    from distill.models.hf.loading import packaged_minilm_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(packaged_minilm_path())
    tokenizer.eos_token = tokenizer.sep_token
    blocks = encode_pairs(["the cat sat", "a"], ["on the mat", "dog barked loudly here"], tokenizer, 32, chat=False)
    prompt = tokenizer("the cat sat", add_special_tokens=False)["input_ids"]
    completion = tokenizer("on the mat", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    row = blocks.labels[0].tolist()
    assert row[: len(prompt)] == [IGNORE] * len(prompt)
    assert row[len(prompt) : len(prompt) + len(completion)] == completion
    assert set(row[len(prompt) + len(completion) :]) <= {IGNORE}  # padding
    mask = shifted_mask(blocks.labels)
    targets = next_token_targets(blocks.labels)
    assert torch.equal(mask, targets != IGNORE)
    # position t scores token t+1: the last prompt position predicts the first completion token
    assert mask[0, len(prompt) - 1] and not mask[0, len(prompt) - 2]


def test_perturbing_prompt_and_padding_logits_changes_no_token_loss():
    labels = torch.tensor([[IGNORE, IGNORE, 5, 6, IGNORE], [IGNORE, 7, 8, 9, 3]])
    mask = shifted_mask(labels)
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 11, generator=generator)
    teacher = torch.randn(2, 5, 11, generator=generator)
    reference = forward_kl_loss(student, teacher, mask=mask)
    noisy_student, noisy_teacher = student.clone(), teacher.clone()
    noisy_student[~mask] = 1e4
    noisy_teacher[~mask] = float("nan")
    assert forward_kl_loss(noisy_student, noisy_teacher, mask=mask).item() == pytest.approx(reference.item())


def test_kjv_split_by_chapter_matches_its_readme():
    words = {split: sum(len(text.split()) for text in read_kjv(KJV, split)) for split in ("train", "dev", "test")}
    assert words == {"train": 711_598, "dev": 37_425, "test": 40_611}
    assert len(read_kjv(KJV, "test")) == 60 and read_kjv(KJV, "test")[0].startswith("In the beginning God")


def test_corpus_files_are_read_by_column_with_clear_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    assert read_texts(tmp_path / "a.jsonl") == ["one", "two"]
    (tmp_path / "b.txt").write_text("first line\n\nsecond\n")
    assert read_texts(tmp_path / "b.txt") == ["first line", "second"]
    with pytest.raises(ValueError, match="no column 'body'; the columns are: text"):
        read_texts(tmp_path / "a.jsonl", column="body")
    with pytest.raises(ValueError, match="line 2: not a KJV verse"):
        (tmp_path / "k.jsonl").write_text('{"book": "A", "chapter": 1, "text": "x"}\n{"oops": 1}\n')
        read_kjv(tmp_path / "k.jsonl", "train")
