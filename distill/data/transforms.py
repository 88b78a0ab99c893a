"""Batch-level input transforms, applied on the training device before teacher and student see a batch.

They draw from torch's global RNG, which checkpoints save and restore, so a resumed run sees
the same jitter as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_shift(images: Tensor, max_shift: int) -> Tensor:
    """Translate each image of a (batch, channels, height, width) tensor by its own random offset.

    Offsets are integers in [-max_shift, max_shift] on each axis, drawn independently per image;
    pixels shifted in are zero (Hinton et al. 2015 jitter MNIST by up to 2 pixels).
    """
    if max_shift <= 0:
        return images
    if images.dim() != 4:
        raise ValueError(
            f"random_shift expects (batch, channels, height, width) images, got shape {tuple(images.shape)}"
        )
    batch, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, batch), device=images.device)
    rows = torch.arange(height, device=images.device)[None, :] + offsets[0][:, None]  # (batch, height)
    cols = torch.arange(width, device=images.device)[None, :] + offsets[1][:, None]  # (batch, width)
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    # padded[b, c, rows[b, i], cols[b, j]] for every b, c, i, j, channels kept in place.
    gathered = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]
    return gathered.permute(0, 3, 1, 2).contiguous()
