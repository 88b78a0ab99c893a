"""Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu 2018, "Deep Mutual Learning", CVPR).

No pre-trained teacher: a cohort of ``k ≥ 2`` peer networks (any architectures with the same classes)
trains together, each one taught by the labels and by the others' predictions. With
``p_j = softmax(z_j / T)``, peer ``i`` minimises (the paper's loss for a cohort of ``k`` peers)::

    L_i = CE(z_i, y) + w · 1/(k − 1) · Σ_{j ≠ i} T² · KL(p_j ‖ p_i)

and the objective's ``total`` is ``Σ_i L_i``. The paper uses ``T = 1`` and ``w = 1`` (the defaults); the
T² factor (1 at T = 1) keeps the gradient scale independent of T, as in :func:`~distill.losses.kd_loss`.

**Simultaneous update.** The paper's Algorithm 1 updates the peers in turn, recomputing the
predictions after each peer's step. Here every peer steps at once on one forward pass, with every
``p_j`` in peer ``i``'s loss *detached*: then ``∂ total / ∂ θ_i = ∂ L_i / ∂ θ_i`` exactly, so each peer
receives the gradient of its own loss from one optimizer over all peers. The two schemes differ only
in that peer ``i`` sees peer ``j``'s predictions from before (not after) ``j``'s step in the same
iteration, the usual way DML is implemented. With a global ``grad_clip`` the clipping norm is taken
over all peers together.

Evaluation and deployment use one peer, ``eval_peer`` (default 0): :meth:`MutualObjective.predict`
returns its logits, and a checkpoint's ``model.safetensors`` holds its weights (it loads into the
bare peer). Every peer is also saved alone as ``peer{i}.safetensors``; :meth:`MutualObjective.predict_all`
and :meth:`MutualObjective.peer` let a benchmark evaluate each one.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from distill.core.batch import Batch, Inputs, call_model, logits_of
from distill.core.distiller import SupervisedObjective
from distill.core.matches import sequence_mask
from distill.core.schedules import Schedule, ScheduleLike, as_schedule
from distill.losses import hard_ce_loss, kd_loss
from distill.strategies.context import PEER_SEED_STRIDE, RunContext, check_single_student, weights_of
from distill.strategies.registry import Row, StrategySpec, register_strategy
from distill.strategies.transfer import check_no_transfer

__all__ = ["MutualLearning", "MutualObjective", "PeerGroup", "check_peer_logits", "mutual_losses"]


def check_peer_logits(logits: Sequence[Tensor]) -> None:
    """Every peer must predict the same positions over the same classes; the error lists each shape."""
    shapes = [tuple(z.shape) for z in logits]
    if len(set(shapes)) > 1:
        listed = ", ".join(f"peer{i} {shape}" for i, shape in enumerate(shapes))
        raise ValueError(
            f"mutual learning needs peers with the same output shape (same number of classes), got logits {listed}; "
            "give every peer the same num_classes"
        )


class PeerGroup(nn.Module):
    """The trainable module of DML: the peers in one ``nn.ModuleList`` (``peers``).

    ``forward(inputs)`` calls every peer (a mapping of inputs as keyword arguments, see
    :func:`~distill.core.batch.call_model`) and returns the list of their logits, each ``(B, C)`` or
    ``(B, L, C)``. Every peer runs inside this one forward, so DDP sees all parameters used.
    """

    def __init__(self, peers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.peers = nn.ModuleList(peers)

    def forward(self, inputs: Inputs) -> list[Tensor]:
        logits = [logits_of(call_model(peer, inputs)) for peer in self.peers]
        check_peer_logits(logits)
        return logits


def mutual_losses(
    logits: Sequence[Tensor],
    labels: Tensor,
    temperature: float = 1.0,
    kl_weight: float = 1.0,
    mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """The DML terms of every peer: ``peer{i}_ce``, ``peer{i}_kl`` and ``total = Σ_i (ce_i + kl_weight · kl_i)``.

    ``kl_i = 1/(k − 1) · Σ_{j ≠ i} T² · KL(softmax(z_j / T).detach() ‖ softmax(z_i / T))``: only peer ``i``
    receives gradient from its own terms.

    Args:
        logits: ``k ≥ 2`` tensors of one shape, ``(B, C)`` or ``(B, L, C)``.
        labels: ``(B,)`` or ``(B, L)`` class indices; -100 is ignored by the CE.
        temperature, kl_weight: ``T > 0`` and the weight ``w`` of the mimicry term.
        mask: ``(B, L)`` padding mask for sequence logits (0 excludes a position from the KL).
    """
    if len(logits) < 2:
        raise ValueError(f"mutual learning needs at least 2 peers, got {len(logits)}")
    check_peer_logits(logits)
    targets = [z.detach() for z in logits]  # the others' predictions are fixed targets for this step
    terms: dict[str, Tensor] = {}
    total = logits[0].new_zeros(())
    for i, z_i in enumerate(logits):
        ce = hard_ce_loss(z_i, labels)
        others = [kd_loss(z_i, targets[j], temperature, mask) for j in range(len(logits)) if j != i]
        kl = torch.stack(others).mean()
        terms[f"peer{i}_ce"], terms[f"peer{i}_kl"] = ce, kl
        total = total + ce + kl_weight * kl
    terms["total"] = total
    return terms


def _warn_if_identical(peers: Sequence[nn.Module]) -> None:
    """Peers with the same weights stay identical up to dropout: DML then teaches them nothing."""
    states = [peer.state_dict() for peer in peers]
    for i in range(len(peers)):
        for j in range(i):
            a, b = states[i], states[j]
            if a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a):
                warnings.warn(
                    f"DML peers {j} and {i} start with identical weights; mutual learning needs different "
                    "initialisations (build each peer under a different seed instead of copying one)",
                    stacklevel=3,
                )
                return


class MutualObjective:
    """Deep Mutual Learning as a Trainer objective (see the module docstring for the loss).

    Args:
        peers: ``k ≥ 2`` distinct networks with the same number of classes; trained in place.
        temperature: ``T`` of the mimicry KL (a number or a :class:`~distill.core.schedules.Schedule`); the
            paper uses 1.
        kl_weight: weight of each peer's mimicry term (number or schedule; the paper uses 1).
        eval_peer: the peer that :meth:`predict` evaluates and ``model.safetensors`` holds.
    """

    def __init__(
        self,
        peers: Sequence[nn.Module],
        temperature: ScheduleLike = 1.0,
        kl_weight: ScheduleLike = 1.0,
        eval_peer: int = 0,
    ) -> None:
        peers = list(peers)
        if len(peers) < 2:
            raise ValueError(f"mutual learning needs at least 2 peer networks, got {len(peers)}")
        for index, peer in enumerate(peers):
            if not isinstance(peer, nn.Module):
                raise TypeError(f"peer {index} is a {type(peer).__name__}, expected an nn.Module")
            for earlier in range(index):
                if peer is peers[earlier]:
                    raise ValueError(f"peer {index} is the same module as peer {earlier}; DML needs distinct networks")
        if not -len(peers) <= eval_peer < len(peers):
            raise ValueError(f"eval_peer must index one of the {len(peers)} peers, got {eval_peer}")
        _warn_if_identical(peers)
        self.temperature: Schedule = as_schedule(temperature)
        self.kl_weight: Schedule = as_schedule(kl_weight)
        self.eval_peer = eval_peer % len(peers)
        self.trainable = PeerGroup(peers)

    @property
    def num_peers(self) -> int:
        return len(self.trainable.peers)

    def peer(self, index: int) -> nn.Module:
        """Peer ``index`` (trained in place; a bare network, ready to save or evaluate alone)."""
        return self.trainable.peers[index]

    # ------------------------------------------------------------------ the objective protocol

    def to(self, device: torch.device) -> MutualObjective:
        return self  # everything lives in ``trainable``

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        """``model`` (the eval peer, loadable into the bare network) and ``peer{i}`` for every peer.

        The eval peer is thus written twice; resuming loads both files into the same module, which agree.
        The Trainer's ``max_norm`` constraint applies to the ``model`` part, i.e. to the eval peer only.
        """
        peers = model.peers
        return {"model": peers[self.eval_peer], **{f"peer{i}": peer for i, peer in enumerate(peers)}}

    def predict(self, model: nn.Module, inputs: Inputs, peer: int | None = None) -> Tensor:
        """Logits of one peer: ``peer`` if given, else ``eval_peer``. ``model`` is the unwrapped PeerGroup."""
        chosen = model.peers[self.eval_peer if peer is None else peer]
        return logits_of(call_model(chosen, inputs))

    def predict_all(self, model: nn.Module, inputs: Inputs) -> list[Tensor]:
        """Every peer's logits, in peer order."""
        return model(inputs)

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        logits = model(batch.inputs)  # through the (possibly DDP-wrapped) PeerGroup
        return mutual_losses(
            logits,
            batch.labels,
            self.temperature(step, total_steps),
            self.kl_weight(step, total_steps),
            sequence_mask(batch.mask, logits[0]),
        )


@register_strategy("mutual")
class MutualLearning(StrategySpec):
    """``strategy: {kind: mutual, peers: k}``: per seed, each peer (student.model, initialised from seed
    ``s + 1000 i``) trained alone on labels, then the same initial peers trained together (DML).

    Run folder: ``<out>/seed-<s>/alone-<i>/`` and ``<out>/seed-<s>/mutual/``. Rows ``peer_alone`` and
    ``peer_mutual``, indexed by peer."""

    kind: Literal["mutual"] = "mutual"
    peers: int = Field(2, ge=2)
    temperature: float = Field(1.0, gt=0)  # the paper's T = 1
    kl_weight: float = Field(1.0, ge=0)

    def check(self, recipe: Any) -> None:
        check_no_transfer(recipe, self.kind)
        check_single_student(recipe, self.kind)

    def preflight(self, context: RunContext) -> None:
        self._objective(self._peers(context, 0))

    def _peers(self, context: RunContext, seed: int) -> list[nn.Module]:
        return [context.build_student(seed + PEER_SEED_STRIDE * i) for i in range(self.peers)]

    def _objective(self, peers: list[nn.Module]) -> MutualObjective:
        return MutualObjective([copy.deepcopy(peer) for peer in peers], self.temperature, self.kl_weight)

    def run(self, context: RunContext) -> list[Row]:
        alone: list[Row] = []
        together: list[Row] = []
        for seed in context.recipe.seeds:
            peers, seed_dir = self._peers(context, seed), context.seed_dir(seed)
            for i, peer in enumerate(peers):
                model, run_dir = copy.deepcopy(peer), seed_dir / f"alone-{i}"
                context.train(SupervisedObjective(model), run_dir, seed, f"peer {i} alone s{seed}")
                alone.append(context.row("peer_alone", seed, model, run_dir, i))
            objective = self._objective(peers)
            run_dir = seed_dir / "mutual"
            context.train(objective, run_dir, seed, f"mutual s{seed}")
            weights = weights_of(run_dir)
            for i in range(self.peers):
                row = context.row("peer_mutual", seed, objective.peer(i), index=i)
                row.weights = weights.with_name(f"peer{i}.safetensors")
                together.append(row)
        return alone + together
