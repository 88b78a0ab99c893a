"""Every loss is reachable by its recipe name; typos are answered with the known names."""

from __future__ import annotations

import pytest

from distill import losses
from distill.losses import UnknownLossError, get, kd_loss, names, register

EXPECTED = {
    "kd": losses.kd_loss,
    "soft_ce": losses.soft_ce_loss,
    "logits_mse": losses.logits_mse_loss,
    "hard_ce": losses.hard_ce_loss,
    "hidden_mse": losses.hidden_mse_loss,
    "cosine": losses.cosine_loss,
    "hint": losses.hint_loss,
    "attention_mse": losses.attention_mse_loss,
    "attention_kl": losses.attention_kl_loss,
}


def test_all_losses_registered() -> None:
    assert set(EXPECTED) <= set(names())
    assert names() == sorted(names())
    for name, fn in EXPECTED.items():
        assert get(name) is fn


def test_get_kd() -> None:
    assert get("kd") is kd_loss


def test_unknown_name_lists_known_names_and_suggests() -> None:
    with pytest.raises(UnknownLossError) as info:
        get("kdd")
    message = str(info.value)
    assert "did you mean 'kd'" in message
    for name in EXPECTED:
        assert name in message
    assert isinstance(info.value, KeyError)  # callers catching KeyError keep working


def test_duplicate_name_to_another_function_raises() -> None:
    def other(student, teacher):
        return student

    with pytest.raises(ValueError, match="'kd' is already registered"):
        register("kd")(other)
    assert get("kd") is kd_loss  # the failed registration changed nothing


def test_registering_the_same_function_again_is_harmless() -> None:
    assert register("kd")(kd_loss) is kd_loss
    assert get("kd") is kd_loss
