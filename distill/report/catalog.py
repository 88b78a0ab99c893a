"""The method zoo at a glance: what each method transfers, what it needs, and how a recipe asks for it.

One entry per registered method. The README's method table and ``benchmarks/methods.py`` both
read this list, so the documentation, the benchmark and the registry cannot drift apart. Layer
*roles* (``maps``, ``embedding``, ...) are resolved to real module names per model pair by the
benchmark; ``recipe`` shows the recipe line with example names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Knowledge = Literal["response", "feature", "relation", "contrastive"]
# Where a feature method reads: every block's output, one middle block, the last block's map,
# the pre-activations of the blocks, or the penultimate embedding (the classifier's input).
Role = Literal["maps", "middle_map", "last_map", "preact", "embedding"]


@dataclass(frozen=True)
class Method:
    name: str  # the registered loss name
    title: str
    paper: str
    knowledge: Knowledge
    inputs: str
    recipe: str  # one line of YAML under `distill:`
    weight: float = 1.0  # the reference implementation's loss weight
    role: Role | None = None  # None: a response method on the logits
    connector: bool = False  # a trainable connector maps student features to the teacher's shape
    options: dict[str, Any] = field(default_factory=dict)
    hard_weight: float = 1.0  # the cross-entropy weight the reference trains with
    needs_maps: bool = False  # spatial feature maps only (no MLP vectors)


METHODS: list[Method] = [
    Method(
        "kd",
        "Hinton KD",
        "Hinton et al. 2015",
        "response",
        "logits",
        "response_loss: kd, temperature: 4, kd_weight: 0.9, hard_weight: 0.1",
        0.9,
        hard_weight=0.1,
    ),
    Method(
        "dkd",
        "Decoupled KD",
        "Zhao et al. CVPR 2022",
        "response",
        "logits + labels",
        "response_loss: dkd, response_options: {alpha: 1, beta: 8}, temperature: 4",
        1.0,
    ),
    Method(
        "dist",
        "DIST",
        "Huang et al. NeurIPS 2022",
        "response",
        "logits",
        "response_loss: dist, response_options: {beta: 1, gamma: 1}, temperature: 1",
        1.0,
    ),
    Method(
        "fitnet",
        "FitNets hint",
        "Romero et al. ICLR 2015",
        "feature",
        "one feature map + connector",
        "matches: [{student: block2, teacher: block2, loss: fitnet, connector: conv1x1, weight: 100}]",
        100.0,
        "middle_map",
        connector=True,
    ),
    Method(
        "at",
        "Attention Transfer",
        "Zagoruyko & Komodakis ICLR 2017",
        "feature",
        "feature maps",
        "matches: [{student: [block1, block2], teacher: [block1, block2], loss: at, weight: 1000}]",
        1000.0,
        "maps",
        needs_maps=True,
    ),
    Method(
        "sad",
        "Self-Attention Distillation maps",
        "Hou et al. ICCV 2019",
        "feature",
        "feature maps",
        "matches: [{student: block3, teacher: block3, loss: sad, weight: 0.1, options: {variant: sum_p}}]",
        0.1,
        "maps",
        needs_maps=True,
    ),
    Method(
        "nst",
        "Neuron Selectivity Transfer",
        "Huang & Wang 2017",
        "feature",
        "feature maps",
        "matches: [{student: block3, teacher: block3, loss: nst, weight: 50}]",
        50.0,
        "maps",
        needs_maps=True,
    ),
    Method(
        "ft",
        "Factor Transfer",
        "Kim et al. NeurIPS 2018",
        "feature",
        "last feature map (paraphraser stage)",
        "matches: [{student: block3, teacher: block3, loss: ft, weight: 200}]",
        200.0,
        "last_map",
    ),
    Method(
        "ab",
        "Activation Boundaries",
        "Heo et al. AAAI 2019",
        "feature",
        "pre-ReLU maps + connector (stage)",
        "matches: [{student: block3.bn, teacher: block3.bn, loss: ab, connector: conv1x1}]",
        1.0,
        "preact",
        connector=True,
        needs_maps=True,
    ),
    Method(
        "vid",
        "Variational Information Distillation",
        "Ahn et al. CVPR 2019",
        "feature",
        "feature maps",
        "matches: [{student: [block1, block2], teacher: [block1, block2], loss: vid}]",
        1.0,
        "maps",
    ),
    Method(
        "rkd_distance",
        "RKD distance",
        "Park et al. CVPR 2019",
        "relation",
        "penultimate embedding",
        "matches: [{student: flatten, teacher: flatten, loss: rkd_distance, weight: 25}]",
        25.0,
        "embedding",
    ),
    Method(
        "rkd_angle",
        "RKD angle",
        "Park et al. CVPR 2019",
        "relation",
        "penultimate embedding",
        "matches: [{student: flatten, teacher: flatten, loss: rkd_angle, weight: 50}]",
        50.0,
        "embedding",
    ),
    Method(
        "sp",
        "Similarity-Preserving",
        "Tung & Mori ICCV 2019",
        "relation",
        "last feature map",
        "matches: [{student: block3, teacher: block3, loss: sp, weight: 3000}]",
        3000.0,
        "last_map",
    ),
    Method(
        "cc",
        "Correlation Congruence",
        "Peng et al. ICCV 2019",
        "relation",
        "penultimate embedding",
        "matches: [{student: flatten, teacher: flatten, loss: cc, weight: 0.02, connector: linear, "
        "options: {kernel: bilinear}}]",
        0.02,
        "embedding",
        connector=True,
        options={"kernel": "bilinear"},
    ),
    Method(
        "pkt",
        "Probabilistic Knowledge Transfer",
        "Passalis & Tefas ECCV 2018",
        "relation",
        "penultimate embedding",
        "matches: [{student: flatten, teacher: flatten, loss: pkt, weight: 30000}]",
        30000.0,
        "embedding",
    ),
    Method(
        "fsp",
        "Flow of Solution Procedure",
        "Yim et al. CVPR 2017",
        "relation",
        "consecutive feature maps + connectors (stage)",
        "matches: [{student: [block1, block2, block3], teacher: [block1, block2, block3], loss: fsp, "
        "connector: conv1x1}]",
        1.0,
        "maps",
        connector=True,
        needs_maps=True,
    ),
    Method(
        "crd",
        "Contrastive Representation Distillation",
        "Tian et al. ICLR 2020",
        "contrastive",
        "penultimate embedding + dataset indices",
        "matches: [{student: flatten, teacher: flatten, loss: crd, weight: 0.8}]",
        0.8,
        "embedding",
    ),
    Method(
        "srrl",
        "Softmax Regression Representation Learning",
        "Yang et al. ICLR 2021",
        "contrastive",
        "penultimate embedding + teacher classifier",
        "matches: [{student: flatten, teacher: flatten, loss: srrl, options: {teacher_head: head}}]",
        1.0,
        "embedding",
    ),
]


def method(name: str) -> Method:
    for entry in METHODS:
        if entry.name == name:
            return entry
    raise KeyError(f"no method {name!r} in the catalogue; known: {', '.join(m.name for m in METHODS)}")


def markdown_table() -> str:
    """The README's method table."""
    lines = ["| method | name | knowledge | needs | recipe |", "|---|---|---|---|---|"]
    for entry in METHODS:
        title = f"{entry.title} ({entry.paper})"
        cells = [title, f"`{entry.name}`", entry.knowledge, entry.inputs, f"`{entry.recipe}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
