"""The on-disk top-k logit cache: round trip, size, refusal of a stale cache, resume of a killed write (issue 17)."""

from __future__ import annotations

import pytest
import torch

from distill.core.shard_store import StaleCacheError
from distill.lm.cache import TopKCache, fill_cache
from distill.lm.corpus import shifted_mask
from distill.losses.lm import forward_kl_loss
from tests.test_lm_models_corpus import tiny_llama


class Vocabulary:
    """Just what the cache key reads of a tokenizer."""

    def __init__(self, size: int = 50) -> None:
        self.vocab = {f"t{i}": i for i in range(size)}

    def get_vocab(self) -> dict[str, int]:
        return self.vocab


def _corpus(blocks: int = 10, length: int = 9) -> torch.Tensor:
    return torch.randint(0, 50, (blocks, length), generator=torch.Generator().manual_seed(0))


def _dense_loss(student, teacher, ids):
    mask = shifted_mask(ids)
    with torch.no_grad():
        return forward_kl_loss(student(input_ids=ids).logits, teacher(input_ids=ids).logits, mask=mask)


def test_a_full_vocabulary_cache_gives_back_the_dense_loss(tmp_path):
    teacher, student, ids = tiny_llama(seed=0), tiny_llama(layers=2, seed=1), _corpus()
    cache = fill_cache(tmp_path / "cache", teacher, Vocabulary(), ids, k=50, batch_size=3, shard_blocks=4)
    assert len(cache) == 10 and len(cache.manifest["shards"]) == 3
    cache.verify()
    rows = [7, 0, 4]
    with torch.no_grad():
        logits = student(input_ids=ids[rows]).logits
        cached = forward_kl_loss(logits, cache.teacher_for(rows), mask=shifted_mask(ids[rows]))
    # float16 log-probabilities on disk: equal to the dense loss up to their rounding
    assert cached.item() == pytest.approx(_dense_loss(student, teacher, ids[rows]).item(), rel=2e-3)


def test_k_32_costs_128_bytes_per_stored_position(tmp_path):
    ids = _corpus(blocks=64, length=33)
    cache = fill_cache(tmp_path / "cache", tiny_llama(), Vocabulary(), ids, k=32, shard_blocks=64)
    positions = 64 * 32
    assert cache.bytes_on_disk() / positions == pytest.approx(128, abs=0.5)
    assert cache.bytes_on_disk() / ids.numel() < 128  # per corpus token: the unscored last positions are not stored


def test_a_stale_cache_is_refused(tmp_path):
    teacher, ids = tiny_llama(), _corpus()
    fill_cache(tmp_path / "cache", teacher, Vocabulary(), ids, k=8)
    with pytest.raises(StaleCacheError, match="another teacher, tokenizer, corpus or k"):
        fill_cache(tmp_path / "cache", teacher, Vocabulary(), ids, k=9)
    with torch.no_grad():
        next(teacher.parameters()).view(-1)[0] += 1e-3
    with pytest.raises(StaleCacheError):
        fill_cache(tmp_path / "cache", teacher, Vocabulary(), ids, k=8)
    with pytest.raises(StaleCacheError):
        fill_cache(tmp_path / "cache", tiny_llama(), Vocabulary(size=51), ids, k=8)
    with pytest.raises(StaleCacheError):
        fill_cache(tmp_path / "cache", tiny_llama(), Vocabulary(), ids[:, :5], k=8)


class KilledAfter(torch.nn.Module):
    """The teacher, stopping the process (an exception here) at its n-th forward."""

    def __init__(self, teacher, forwards: int) -> None:
        super().__init__()
        self.teacher, self.left, self.calls = teacher, forwards, 0

    def get_output_embeddings(self):
        return self.teacher.get_output_embeddings()

    def state_dict(self, *args, **kwargs):
        return self.teacher.state_dict(*args, **kwargs)

    def forward(self, **inputs):
        self.calls += 1
        if self.calls > self.left:
            raise KeyboardInterrupt
        return self.teacher(**inputs)


def test_an_interrupted_write_resumes_at_the_first_missing_shard(tmp_path):
    teacher, ids = tiny_llama(), _corpus(blocks=10)
    whole = fill_cache(tmp_path / "whole", teacher, Vocabulary(), ids, k=5, batch_size=2, shard_blocks=4)
    killed = KilledAfter(teacher, forwards=3)  # shard 0 needs 2 forwards; dies inside shard 1
    with pytest.raises(KeyboardInterrupt):
        fill_cache(tmp_path / "cache", killed, Vocabulary(), ids, k=5, batch_size=2, shard_blocks=4)
    with pytest.raises(ValueError, match="unfinished \\(4 of 10 blocks\\)"):
        TopKCache(tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".tmp")]
    resumed = KilledAfter(teacher, forwards=100)
    cache = fill_cache(tmp_path / "cache", resumed, Vocabulary(), ids, k=5, batch_size=2, shard_blocks=4)
    assert resumed.calls == 3  # blocks 4..9 only
    cache.verify()
    for a, b in ((cache.teacher_for(range(10)), whole.teacher_for(range(10))),):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.log_probs, b.log_probs)


def test_a_damaged_shard_is_found_by_verify(tmp_path):
    cache = fill_cache(tmp_path / "cache", tiny_llama(), Vocabulary(), _corpus(), k=4, shard_blocks=5)
    shard = tmp_path / "cache" / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"shard-00001\.safetensors does not match its sha256"):
        cache.verify()
