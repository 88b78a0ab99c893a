"""Pair (b) of ``benchmarks/overhead.py``: MiniLM-L6 -> 3 layers on SST-2, KD + hidden MSE + attention KL.

The teacher is the packaged MiniLM-L6 with a classification head (as initialised: the cost does not depend
on its weights), the student its layers 0, 2, 5 (``uniform``); batches of 32 sentences cut at 64 tokens,
length-grouped. distill runs the recipe's Distiller (forward hooks capture the layers) through its Trainer.
The hand loop is plain PyTorch with Hugging Face's ``output_hidden_states`` / ``output_attentions``: the
same batch order (the same sampler and collate, the Trainer's seeded generator), the same loss functions on
the same layer pairs, AdamW with the same linear schedule, gradient clipping at 1.0, a JSON line every
``log_every`` steps and a safetensors file of the student after each epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from benchmarks.hand_loop import train_by_hand
from distill.losses import attention_kl_loss, hidden_mse_loss, kd_loss
from distill.models.hf import layer_pairs

LAYERS = 3


def minilm_recipe(examples: int, epochs: int) -> dict[str, Any]:
    train = {
        "epochs": epochs,
        "batch_size": 32,
        "optimizer": {"name": "adamw", "lr": 1e-4, "weight_decay": 0.01},
        "lr_schedule": {"name": "linear", "warmup_steps": 10},
        "grad_clip": 1.0,
        "log_every": 20,
        "cpu": True,
    }
    return {
        "name": "overhead-minilm",
        "data": {"dataset": "sst2", "train_subset": examples, "split_seed": 0, "max_length": 64},
        "teacher": {"model": {"kind": "hf", "path": "minilm"}, "seed": 0, "train": train},
        "student": {"model": {"kind": "hf", "layers": LAYERS, "layer_map": "uniform"}, "train": train},
        "distill": {
            "response_loss": "kd",
            "temperature": 2.0,
            "hard_weight": 1.0,
            "matches": [
                {"student": "hidden", "teacher": "hidden", "layer_map": "uniform", "embeddings": True}
                | {"loss": "hidden_mse", "name": "hidden"},
                {"student": "attention", "teacher": "attention", "layer_map": "uniform"}
                | {"loss": "attention_kl", "name": "attention"},
            ],
        },
    }


def _indices(names: list[str]) -> list[int]:
    return [int(name.split(":")[1]) for name in names]


def hand_loop(teacher, student, task, settings, distill, folder: Path, seed: int = 0) -> int:
    """The same training in plain PyTorch; returns the optimizer steps taken."""
    hidden_s, hidden_t = (_indices(n) for n in layer_pairs("hidden", LAYERS, 6, "uniform", include_embeddings=True))
    attention_s, attention_t = (_indices(n) for n in layer_pairs("attention", LAYERS, 6, "uniform"))
    options = settings.optimizer
    optimizer = torch.optim.AdamW(student.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    generator = torch.Generator()
    loader = DataLoader(task.train, batch_sampler=task.batches(settings.batch_size)(generator), collate_fn=task.collate)
    teacher.eval()

    def loss_of(batch: dict[str, Tensor]) -> Tensor:
        labels = batch["labels"]
        inputs = {key: value for key, value in batch.items() if key not in ("labels", "index")}
        mask = inputs["attention_mask"]
        with torch.no_grad():
            t = teacher(**inputs, output_hidden_states=True, output_attentions=True)
        s = student(**inputs, output_hidden_states=True, output_attentions=True)
        loss = distill.kd_weight * kd_loss(s.logits, t.logits, temperature=distill.temperature)
        loss = loss + distill.hard_weight * F.cross_entropy(s.logits, labels)
        for i, j in zip(hidden_s, hidden_t, strict=True):
            loss = loss + hidden_mse_loss(s.hidden_states[i], t.hidden_states[j], mask)
        for i, j in zip(attention_s, attention_t, strict=True):
            loss = loss + attention_kl_loss(s.attentions[i], t.attentions[j], mask)
        return loss

    return train_by_hand(student, optimizer, loader, generator, settings, folder, loss_of, seed)
