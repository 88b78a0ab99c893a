"""Weight clustering (``- {cluster: {bits: 4}}``), Deep Compression style (Han et al. 2016): the weights
of each prunable layer (Linear and Conv; see :mod:`distill.compress.masks`) are replaced by the nearest
of 2^bits centroids found by k-means on that layer's weights, initialised linearly between the layer's
min and max (the paper's best initialisation). Pruned zeros stay zero: they form a cluster of their own,
fixed at 0. A following ``distill`` step fine-tunes the centroids: after every optimizer step each
weight is set back to the mean of its cluster, i.e. each centroid moves by the average of its weights'
updates (the paper sums the gradients of a cluster's weights; with a per-weight optimiser the average
of the updates is the closest equivalent). Stored as a codebook plus ``bits``-bit indices per layer
(:mod:`distill.compress.sparse_io`), so the table's bytes show it.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from distill.compress.base import CompressState, CompressStep, register_step
from distill.compress.masks import prunable_weights


def kmeans_1d(values: Tensor, clusters: int, iterations: int = 30) -> tuple[Tensor, Tensor]:
    """(centroids, assignment) of 1-D ``values``: Lloyd's algorithm from linearly spaced centroids."""
    low, high = float(values.min()), float(values.max())
    centroids = torch.linspace(low, high, clusters, dtype=values.dtype)
    assignment = torch.zeros_like(values, dtype=torch.long)
    for _ in range(iterations):
        assignment = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, values)
        counts = torch.zeros_like(centroids).index_add_(0, assignment, torch.ones_like(values))
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        order = torch.argsort(moved)  # keep them sorted: bucketize needs ascending boundaries
        if torch.equal(moved[order], centroids):
            break
        centroids = moved[order]
    assignment = torch.bucketize(values, (centroids[1:] + centroids[:-1]) / 2)
    return centroids, assignment


@torch.no_grad()
def cluster_weight(weight: Tensor, bits: int) -> Tensor:
    """The cluster index of every entry of ``weight`` (-1 for zeros, which stay zero), and the weight
    replaced in place by its centroids."""
    flat = weight.detach().flatten()
    nonzero = flat != 0
    codes = torch.full_like(flat, -1, dtype=torch.long)
    if nonzero.any():
        clusters = min(2**bits - int(bool((~nonzero).any())), int(nonzero.sum()))
        centroids, assignment = kmeans_1d(flat[nonzero].double(), max(clusters, 1))
        codes[nonzero] = assignment
        flat[nonzero] = centroids[assignment].to(flat.dtype)
        weight.copy_(flat.view_as(weight))
    return codes.view_as(weight)


class ClusterTies:
    """Keeps clustered weights tied: after each optimizer step, each weight becomes its cluster's mean."""

    def __init__(self, model: nn.Module, codes: dict[str, Tensor]) -> None:
        self.model, self.codes = model, codes

    def __call__(self, step: int = 0, total_steps: int | None = None) -> None:
        """The Trainer's after-step hook (see :class:`~distill.compress.masks.MaskedObjective`)."""
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        parameters = dict(self.model.named_parameters())
        for name, code in self.codes.items():
            weight = parameters[name]
            flat, assignment = weight.view(-1), code.view(-1).to(weight.device)
            kept = assignment >= 0
            clusters = int(assignment.max()) + 1 if kept.any() else 0
            sums = torch.zeros(clusters, dtype=flat.dtype, device=flat.device).index_add_(
                0, assignment[kept], flat[kept]
            )
            counts = torch.bincount(assignment[kept], minlength=clusters).to(flat.dtype)
            flat[kept] = (sums / counts.clamp(min=1))[assignment[kept]]
            flat[~kept] = 0


@register_step("cluster")
class Cluster(CompressStep):
    kind: Literal["cluster"] = "cluster"
    bits: int = Field(4, ge=1, le=8)  # 2^bits values per layer (zeros included when the layer is pruned)
    skip: list[str] = Field(default_factory=list)  # module names left as they are

    def label(self) -> str:
        return f"cluster weights ({2**self.bits} values per layer)"

    def apply(self, state: CompressState, index: int) -> None:
        model = state.require_torch(self.kind)
        state.keep_before()
        for name, weight in prunable_weights(model, self.skip).items():
            state.clusters[name] = cluster_weight(weight, self.bits)
