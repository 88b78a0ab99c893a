"""Weight constraints the Trainer applies after each optimizer step (``train.max_norm``)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    """Rescale each hidden unit's incoming weight vector to L2 norm <= ``max_norm``.

    The max-norm constraint of Srivastava et al. 2014 (used with dropout by Hinton et al. 2015);
    applied to every Linear layer except one named ``head``.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not name.endswith("head"):
            module.weight.copy_(torch.renorm(module.weight, p=2, dim=0, maxnorm=max_norm))
