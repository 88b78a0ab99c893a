"""Every loss is reachable by its recipe name; typos are answered with the known names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distill import losses
from distill.losses import LossInfo, UnknownLossError, get, info, kd_loss, names, register, registry, unregister

ROOT = Path(__file__).resolve().parents[1]

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
    assert info("kd").title == "Hinton KD"  # a bare re-registration keeps the catalog metadata


def test_registering_the_same_function_with_other_metadata_raises() -> None:
    with pytest.raises(ValueError, match="other metadata"):
        register("kd", title="Something else")(kd_loss)
    assert info("kd").title == "Hinton KD"


def test_metadata_round_trips_through_register_and_info() -> None:
    def toy(student, teacher):
        return student

    register(
        "toy_meta",
        stage="both",
        pretrain_epochs=2,
        title="Toy",
        paper="Nobody 2099",
        knowledge="relation",
        inputs="penultimate embedding",
        recipe="matches: [{student: flatten, teacher: flatten, loss: toy_meta}]",
        order=7,
    )(toy)
    try:
        assert info("toy_meta") == LossInfo(
            stage="both",
            pretrain_epochs=2,
            title="Toy",
            paper="Nobody 2099",
            knowledge="relation",
            inputs="penultimate embedding",
            recipe="matches: [{student: flatten, teacher: flatten, loss: toy_meta}]",
            order=7,
        )
    finally:
        unregister("toy_meta")
    assert "toy_meta" not in names()
    with pytest.raises(UnknownLossError):
        info("toy_meta")


def test_helpers_carry_no_catalog_metadata_and_methods_do() -> None:
    assert info("hard_ce").title == "" and info("hard_ce").knowledge is None
    assert info("dkd").paper == "Zhao et al. CVPR 2022" and info("dkd").inputs == "logits + labels"
    assert info("crd").knowledge == "contrastive"
    assert info("fsp").layer_lists and info("fsp").knowledge == "relation"  # old keywords kept beside the new


def test_textbrewer_mmd_is_a_per_layer_helper() -> None:
    from distill.losses.transformer import mmd_loss

    assert get("mmd") is mmd_loss
    # One match per layer pair, so the Distiller passes it the padding mask; no catalog entry (like pkd).
    assert not info("mmd").layer_lists and info("mmd").title == "" and info("mmd").knowledge is None


def test_unknown_knowledge_is_refused_at_registration() -> None:
    with pytest.raises(ValueError, match="knowledge must be one of"):
        register("toy_bad", knowledge="vibes")  # type: ignore[arg-type]
    assert "toy_bad" not in names()


def test_unregister_unknown_name_raises() -> None:
    with pytest.raises(UnknownLossError):
        unregister("no_such_loss")


def test_methods_with_trainable_parts_are_found_by_name() -> None:
    from distill.methods import CRDLoss, FactorTransferLoss, SRRLLoss, VIDLoss

    assert {"crd", "ft", "srrl", "vid"} <= set(names())
    assert get("crd") is CRDLoss and get("ft") is FactorTransferLoss
    assert get("srrl") is SRRLLoss and get("vid") is VIDLoss


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_importing_losses_does_not_import_the_methods_layer() -> None:
    """`losses` sits below `methods`: the methods are imported by name on the first lookup, not on import."""
    result = _run(
        "import sys, distill.losses\n"
        "assert 'distill.methods' not in sys.modules, 'imported on import'\n"
        "assert 'crd' in distill.losses.names()\n"
        "assert 'distill.methods' in sys.modules\n"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "code",
    [
        "from distill.losses import get; assert get('crd').__name__ == 'CRDLoss'",
        "from distill.losses.registry import info; assert info('vid').title",
        "from distill.methods.ft import FactorTransferLoss; from distill.losses import get;"
        " assert get('ft') is FactorTransferLoss",
    ],
    ids=["get-first", "info-first", "methods-first"],
)
def test_lazy_load_tolerates_every_import_order(code: str) -> None:
    result = _run(code)
    assert result.returncode == 0, result.stderr


def _fake_provider(monkeypatch, tmp_path: Path, body: str) -> str:
    """A provider module on a temporary path, made the registry's only built-in, with the load pending."""
    name = "toy_provider_zz"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_BUILTIN_PROVIDERS", (name,))
    monkeypatch.setattr(registry, "_providers_loaded", False)
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_a_lookup_during_the_provider_import_returns_without_recursing(monkeypatch, tmp_path) -> None:
    """As `distill.methods` may: a provider that looks a loss up while it imports gets what is registered."""
    name = _fake_provider(monkeypatch, tmp_path, "from distill.losses import registry\nSEEN = registry.names()\n")
    assert "kd" in registry.names()
    assert "kd" in sys.modules[name].SEEN
    assert registry._providers_loaded and not registry._providers_loading
    monkeypatch.delitem(sys.modules, name)


def test_a_failed_provider_import_is_retried(monkeypatch, tmp_path) -> None:
    """A broken provider shows its own error on every lookup, not a misleading unknown name later."""
    name = _fake_provider(monkeypatch, tmp_path, "raise ImportError('provider is broken')\n")
    for _ in range(2):
        with pytest.raises(ImportError, match="provider is broken"):
            registry.get("kd")
    assert not registry._providers_loaded and not registry._providers_loading
    assert name not in sys.modules
