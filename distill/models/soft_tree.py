"""Soft decision tree of Frosst & Hinton (2017), "Distilling a Neural Network Into a Soft Decision Tree".

A complete binary tree of ``depth`` levels of inner nodes and ``2^depth`` leaves. Inner node ``i`` is a
logistic filter that sends an input ``x`` (flattened) to its right child with probability::

    p_i(x) = σ(β (x·w_i + b_i))

(``β`` is the inverse temperature that sharpens the decisions). Leaf ``l`` holds a learned class
distribution ``Q_l = softmax(φ_l)``. The probability of reaching leaf ``l`` is the product of the
decisions along its path, ``P^l(x) = Π_{i on the path} p_i(x) or 1 − p_i(x)``, and the prediction is the
mixture ``Σ_l P^l(x) Q_l``.

Nodes are numbered breadth first (the root is 0, the children of ``i`` are ``2i + 1`` on the left and
``2i + 2`` on the right), so the inner nodes of depth ``d`` are ``2^d − 1 … 2^{d+1} − 2`` and the leaves
are numbered left to right.

``forward`` returns the *log* of the mixture. Log-probabilities serve as logits everywhere in the
library: ``softmax(log p) = p``, so ``hard_ce``, ``kd``, ``soft_ce`` and accuracy (argmax) work unchanged.
Everything is computed in log space (``logsigmoid``, ``logsumexp``), so a deep tree whose path
probabilities underflow in float32 still gives finite outputs, penalties and gradients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class TreeOutput:
    """What one pass through the tree computes.

    * ``log_probs`` ``(B, C)``: ``log Σ_l P^l(x) Q_l``, usable as logits.
    * ``log_paths`` ``(B, L)``: ``log P^l(x)`` for every leaf.
    * ``log_leaves`` ``(L, C)``: ``log Q_l`` for every leaf.
    * ``penalty`` scalar: the routing penalty of the batch (see :meth:`SoftDecisionTree.penalty`).
    """

    log_probs: Tensor
    log_paths: Tensor
    log_leaves: Tensor
    penalty: Tensor


class SoftDecisionTree(nn.Module):
    """A soft binary decision tree with a linear filter per inner node and a class distribution per leaf.

    Args:
        input_shape: shape of one example (without the batch dim); inputs are flattened.
        num_classes: ``C``, the size of each leaf distribution.
        depth: levels of inner nodes; ``2^depth − 1`` inner nodes and ``2^depth`` leaves.
        inverse_temperature: ``β > 0`` in ``σ(β (x·w + b))``; larger values make sharper decisions.
        learn_inverse_temperature: learn ``β`` (as ``log β``, so it stays positive), starting from
            ``inverse_temperature``; by default ``β`` is a fixed number, as in the paper.
        penalty_strength: ``λ``, the weight of the routing penalty at the root.
        penalty_decay: the penalty weight of an inner node at depth ``d`` is ``λ · decay^d``; the paper's
            ``λ · 2^{−d}`` is the default 0.5.

    Modules: ``inner`` (``Linear(in_features, 2^depth − 1)``, row ``i`` is ``w_i``, bias ``b_i``) and
    ``leaf_logits`` (``(2^depth, C)``, the ``φ_l``).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        depth: int = 8,
        inverse_temperature: float = 1.0,
        penalty_strength: float = 0.1,
        penalty_decay: float = 0.5,
        learn_inverse_temperature: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"SoftDecisionTree: depth must be >= 1 (levels of inner nodes), got {depth}")
        if not inverse_temperature > 0:
            raise ValueError(f"SoftDecisionTree: inverse_temperature must be > 0, got {inverse_temperature}")
        if num_classes < 1:
            raise ValueError(f"SoftDecisionTree: num_classes must be >= 1, got {num_classes}")
        self.input_shape = tuple(int(size) for size in input_shape)
        self.in_features = math.prod(self.input_shape)
        self.num_classes = num_classes
        self.depth = depth
        self.penalty_strength = float(penalty_strength)
        self.penalty_decay = float(penalty_decay)
        self.inner = nn.Linear(self.in_features, self.num_inner)
        self.leaf_logits = nn.Parameter(0.01 * torch.randn(self.num_leaves, num_classes))
        if learn_inverse_temperature:
            self.log_inverse_temperature = nn.Parameter(torch.tensor(math.log(inverse_temperature)))
        else:
            self.log_inverse_temperature = None
            self.fixed_inverse_temperature = float(inverse_temperature)
        depths = torch.cat([torch.full((2**d,), d) for d in range(depth)])
        # Derived from the constructor arguments, so kept out of the state dict.
        self.register_buffer("node_depths", depths, persistent=False)

    @property
    def num_inner(self) -> int:
        return 2**self.depth - 1

    @property
    def num_leaves(self) -> int:
        return 2**self.depth

    @property
    def inverse_temperature(self) -> Tensor | float:
        if self.log_inverse_temperature is None:
            return self.fixed_inverse_temperature
        return self.log_inverse_temperature.exp()

    def penalty_weights(self) -> Tensor:
        """``λ_i = λ · decay^{d_i}`` per inner node, ``(2^depth − 1,)``."""
        return self.penalty_strength * self.penalty_decay ** self.node_depths.to(self.leaf_logits.dtype)

    def _flatten(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        if flat.shape[1] != self.in_features:
            raise ValueError(
                f"SoftDecisionTree: inputs of shape {tuple(x.shape)} have {flat.shape[1]} features per example; "
                f"the tree was built for input_shape {self.input_shape} ({self.in_features} features)"
            )
        return flat

    def decision_logits(self, x: Tensor) -> Tensor:
        """``β (x·w_i + b_i)`` for every inner node, ``(B, 2^depth − 1)``; ``p_i = σ`` of it."""
        return self.inverse_temperature * self.inner(self._flatten(x))

    def _route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(log reach of inner nodes, log p_i, log (1 − p_i), log P^l of leaves)``; the first three ``(B, n_inner)``.

        One step per level: the reach probabilities of a level's nodes times their (1 − p, p) give the
        next level, interleaved so that node ``j`` of a level has children ``2j`` and ``2j + 1`` there.
        """
        logits = self.decision_logits(x)
        log_right, log_left = F.logsigmoid(logits), F.logsigmoid(-logits)
        level = logits.new_zeros(logits.shape[0], 1)  # log reach of the root
        reach = []
        for d in range(self.depth):
            reach.append(level)
            first, last = 2**d - 1, 2 ** (d + 1) - 1
            level = torch.stack([level + log_left[:, first:last], level + log_right[:, first:last]], dim=-1).flatten(1)
        return torch.cat(reach, dim=1), log_right, log_left, level

    def _penalty(self, log_reach: Tensor, log_right: Tensor, log_left: Tensor) -> Tensor:
        """Eq. 3-4 of the paper over the batch; see :meth:`penalty`."""
        if log_reach.shape[0] == 0:  # no example reaches anything: nothing to balance
            return log_reach.sum() * 0.0
        log_mass = torch.logsumexp(log_reach, dim=0)
        log_alpha = torch.logsumexp(log_reach + log_right, dim=0) - log_mass
        log_not_alpha = torch.logsumexp(log_reach + log_left, dim=0) - log_mass
        return -(self.penalty_weights() * 0.5 * (log_alpha + log_not_alpha)).sum()

    def forward(self, x: Tensor, details: bool = False) -> Tensor | TreeOutput:
        """Log mixture prediction ``log Σ_l P^l(x) Q_l``, ``(B, C)``; with ``details`` a :class:`TreeOutput`.

        Objectives that need the penalty call ``model(x, details=True)`` so the pass goes through
        ``forward`` (and hence through a DDP wrapper).
        """
        log_reach, log_right, log_left, log_paths = self._route(x)
        log_leaves = F.log_softmax(self.leaf_logits, dim=-1)
        log_probs = torch.logsumexp(log_paths.unsqueeze(-1) + log_leaves, dim=1)
        if not details:
            return log_probs
        return TreeOutput(log_probs, log_paths, log_leaves, self._penalty(log_reach, log_right, log_left))

    def forward_with_penalty(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(log_probs (B, C), penalty scalar)`` from one pass."""
        output = self(x, details=True)
        return output.log_probs, output.penalty

    def penalty(self, x: Tensor) -> Tensor:
        """Routing penalty of Frosst & Hinton (eq. 3-4), a scalar, already weighted by ``λ_d``.

        For inner node ``i`` with reach probability ``P^i(x)``, over the examples ``x`` of the batch::

            α_i = Σ_x P^i(x) p_i(x) / Σ_x P^i(x)
            C   = −Σ_i λ · decay^{d_i} · (0.5 log α_i + 0.5 log(1 − α_i))

        the cross-entropy between the balanced split (0.5, 0.5) and the node's average split, which
        keeps nodes from sending everything one way (where the sigmoid's gradient vanishes). ``log α``
        and ``log(1 − α)`` are computed directly as differences of logsumexps, so they are exact where
        ``α`` is within float precision of 0 or 1 and need no clamp; their gradients are bounded by β.
        The paper also smooths ``α`` of deep nodes with running averages; this uses the batch only.
        """
        log_reach, log_right, log_left, _ = self._route(x)
        return self._penalty(log_reach, log_right, log_left)

    def path_probabilities(self, x: Tensor) -> Tensor:
        """``P^l(x)`` for every leaf, ``(B, 2^depth)``; each row sums to 1."""
        return self._route(x)[3].exp()

    def leaf_distributions(self) -> Tensor:
        """``Q_l = softmax(φ_l)``, ``(2^depth, C)``."""
        return F.softmax(self.leaf_logits, dim=-1)

    def max_path_predict(self, x: Tensor, log: bool = False) -> Tensor:
        """The paper's test-time alternative: the distribution ``Q_l`` of the most probable leaf, ``(B, C)``.

        A prediction then rests on one root-to-leaf chain of decisions, which is what makes it
        explainable. ``log`` returns ``log Q_l`` (exact, usable as logits) instead.
        """
        leaf = self._route(x)[3].argmax(dim=1)
        leaves = F.log_softmax(self.leaf_logits, dim=-1) if log else self.leaf_distributions()
        return leaves[leaf]
