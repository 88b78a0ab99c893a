"""Where the parts of a Hugging Face encoder live, so layers can be named by index.

BERT, RoBERTa, ELECTRA, MiniLM and friends share one layout (``<prefix>.embeddings``,
``<prefix>.encoder.layer.<i>.attention.self.{query,key,value}``); DistilBERT names them
``transformer.layer.<i>.attention.{q_lin,k_lin,v_lin}``. :func:`layout_of` finds them by shape rather
than by model class, so other families with the same structure work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# (query, key, value) attribute names of a self-attention module, per family.
_PROJECTION_NAMES = (("query", "key", "value"), ("q_lin", "k_lin", "v_lin"), ("query_proj", "key_proj", "value_proj"))
# Attention that adds more than q·k/√d to its scores (DeBERTa's disentangled relative-position terms):
# ``scores:K`` recomputed from the projections would not be the model's, so it is refused there.
SUPPORTED = "supported: BERT-family encoders (BERT, RoBERTa, XLM-RoBERTa, ELECTRA, MiniLM, DistilBERT, DeBERTa-v2)"
_RELATIVE_ATTENTION = ("query_proj", "key_proj", "value_proj")


@dataclass(frozen=True)
class EncoderLayout:
    """Dotted module names of an encoder's parts (all relative to the model given to :func:`layout_of`)."""

    embeddings: str
    layers: str  # the nn.ModuleList of transformer layers
    num_layers: int
    num_heads: int
    attention: str  # the self-attention module, relative to one layer
    projections: tuple[str, str, str]  # query, key, value attribute names inside the attention module
    head: str | None  # the task head whose output is the logits (``classifier``), when there is one
    plain_scores: bool = True  # the attention scores are q·k/√d (False: relative-position terms too)

    def layer(self, index: int) -> str:
        return f"{self.layers}.{index}"

    def attention_of(self, index: int) -> str:
        return f"{self.layers}.{index}.{self.attention}"


def _config_value(config: object, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"the model config has none of {names}; cannot tell the encoder's size")


def is_transformer(model: nn.Module) -> bool:
    """Whether ``model`` looks like a Hugging Face transformer (it has a ``config`` with a layer count)."""
    config = getattr(model, "config", None)
    return config is not None and any(hasattr(config, n) for n in ("num_hidden_layers", "n_layers"))


def layout_of(model: nn.Module) -> EncoderLayout:
    """Locate embeddings, the layer list, self-attention and the head of a BERT-family model.

    Raises a ValueError naming what could not be found, for models of another shape.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no Hugging Face config; layer indices need a transformer")
    num_layers = _config_value(config, "num_hidden_layers", "n_layers")
    num_heads = _config_value(config, "num_attention_heads", "n_heads")
    names = dict(model.named_modules())
    layer_lists = [
        name for name, module in names.items() if isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]
    embeddings = [name for name in names if name.split(".")[-1] == "embeddings"]
    if not layer_lists or not embeddings:
        raise ValueError(
            f"cannot find the embeddings and a list of {num_layers} layers in {type(model).__name__}; {SUPPORTED}"
        )
    layers = min(layer_lists, key=len)  # the outermost list (shortest dotted name)
    attention, projections = _find_attention(names[f"{layers}.0"], type(model).__name__)
    head = "classifier" if "classifier" in names else None
    return EncoderLayout(
        embeddings=min(embeddings, key=len),
        layers=layers,
        num_layers=num_layers,
        num_heads=num_heads,
        attention=attention,
        projections=projections,
        head=head,
        plain_scores=projections != _RELATIVE_ATTENTION,
    )


def _find_attention(layer: nn.Module, model_name: str) -> tuple[str, tuple[str, str, str]]:
    for name, module in layer.named_modules():
        for projections in _PROJECTION_NAMES:
            if all(isinstance(getattr(module, p, None), nn.Linear) for p in projections):
                return name, projections
    raise ValueError(
        f"cannot find a self-attention module with separate query/key/value projections in a layer of {model_name} "
        f"(a fused one, as in ModernBERT, is not supported); {SUPPORTED}"
    )
