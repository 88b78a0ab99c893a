"""Tiny randomly initialised BERT models for tests (no download)."""

from __future__ import annotations

import torch
import transformers


def tiny_config(layers: int = 4, hidden: int = 16, heads: int = 2, labels: int = 3, **overrides):
    options = dict(
        vocab_size=60,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        num_labels=labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    options.update(overrides)
    return transformers.BertConfig(**options)


def tiny_bert(task: str = "sequence", seed: int = 0, **config) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = transformers.BertForSequenceClassification if task == "sequence" else transformers.BertForTokenClassification
    return cls(tiny_config(**config)).eval()


def tiny_inputs(batch: int = 3, length: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random ids with right padding: example b has length - b valid positions."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 60, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(batch):
        mask[row, length - row :] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def save_tiny_bert_folder(folder) -> str:
    """A 4-layer BERT with the packaged tokenizer's vocabulary, saved like any Hugging Face folder."""
    from distill.models.hf.loading import packaged_minilm_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(packaged_minilm_path())
    config = tiny_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def save_tiny_char_bert_folder(folder) -> str:
    """A 2-layer BERT whose own tokenizer spells words letter by letter (a vocabulary of 57 pieces): it
    tokenises every text otherwise than the packaged MiniLM tokenizer."""
    from pathlib import Path

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters)]
    Path(folder).mkdir(parents=True, exist_ok=True)
    tokenizer = transformers.BertTokenizerFast(vocab={piece: i for i, piece in enumerate(vocab)}, do_lower_case=True)
    transformers.BertModel(tiny_config(layers=2, vocab_size=len(vocab), max_position_embeddings=128)).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return str(folder)
