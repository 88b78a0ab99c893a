"""Tiny causal LMs saved as Hugging Face folders (with the packaged MiniLM tokenizer) and KJV text files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

from distill.models.hf.loading import packaged_minilm_path

KJV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kjv" / "kjv.jsonl"


def minilm_tokenizer():
    """A real tokenizer (BERT word pieces, 30,522 tokens) with [SEP] as end of text, for tiny LMs."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(packaged_minilm_path())
    tokenizer.eos_token = tokenizer.sep_token
    return tokenizer


def tiny_lm_folder(folder: Path, layers: int = 4, seed: int = 0, hidden: int = 32) -> Path:
    """A random Llama of ``layers`` decoder layers and the MiniLM vocabulary, saved with its tokenizer."""
    tokenizer = minilm_tokenizer()
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def kjv_files(folder: Path, verses: int = 240) -> dict[str, Path]:
    """The first ``verses`` verses of Genesis as train (3/4), validation and test text files (1/8 each)."""
    lines = []
    with open(KJV, encoding="utf-8") as rows:
        for _ in range(verses):
            lines.append(json.loads(next(rows))["text"])
    cut, end = verses * 3 // 4, verses * 7 // 8
    parts = {"train": lines[:cut], "validation": lines[cut:end], "test": lines[end:]}
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, texts in parts.items():
        paths[name] = folder / f"{name}.txt"
        paths[name].write_text("\n".join(texts) + "\n", encoding="utf-8")
    return paths


def own_tokenizer_folder(folder: Path, layers: int = 2, seed: int = 1) -> Path:
    """A tiny Llama with its own word-piece tokenizer (trained on KJV verses: another, smaller vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    verses = []
    with open(KJV, encoding="utf-8") as rows:
        for _ in range(400):
            verses.append(json.loads(next(rows))["text"])
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[EOS]"]
    raw.train_from_iterator(verses, trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    )
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
