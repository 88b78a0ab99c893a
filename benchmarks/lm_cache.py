"""What the top-k logit cache costs on disk and how far its loss is from the dense teacher's.

    python -m benchmarks.lm_cache [--blocks 200]

Teacher: the packaged SmolLM2-135M-Instruct (GGUF, vocabulary 49,152). Data: the King James Bible's test
split (../shared/data/kjv, by chapter), packed into blocks of 128 tokens; the first ``--blocks`` of them.
For two students made from the teacher by dropping layers (6 of 30, the issue's starting point, and 24
of 30, a student close to its teacher) it reports the held-out forward KL(p_T ‖ p_S) with the dense
teacher and with the teacher read back from a k = 32 cache (each tail rule of distill.losses.lm), the
relative error, and the cache's bytes per corpus token. Writes benchmarks/results/lm_cache.json. About 10 minutes here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.nlp_common import RESULTS
from distill.lm.cache import TopKCache, fill_cache
from distill.lm.corpus import pack_corpus, read_kjv, shifted_mask
from distill.lm.models import drop_layers, load_causal_lm, load_tokenizer, uniform_layers
from distill.losses.lm import forward_kl_loss
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

KJV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kjv" / "kjv.jsonl"
BLOCK, BATCH, K = 128, 8, 32


@torch.no_grad()
def token_weighted_kl(student, teacher_of_batch, ids: torch.Tensor) -> float:
    """Forward KL over every scored token of ``ids``, weighted by tokens (not a mean of batch means)."""
    total, tokens = 0.0, 0
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        mask = shifted_mask(batch)
        loss = forward_kl_loss(student(input_ids=batch).logits, teacher_of_batch(start, batch), mask=mask)
        total += loss.item() * int(mask.sum())
        tokens += int(mask.sum())
    return total / tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=200)
    arguments = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    teacher, tokenizer = load_causal_lm("smollm2"), load_tokenizer("smollm2")
    ids = pack_corpus(read_kjv(KJV, "test"), tokenizer, BLOCK).input_ids[: arguments.blocks]
    results = {"benchmark": "lm_cache", "blocks": len(ids), "block_size": BLOCK, "k": K, "versions": library_versions()}
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        cache = fill_cache(Path(scratch) / "cache", teacher, tokenizer, ids, k=K, batch_size=BATCH)
        results["fill_seconds"] = time.perf_counter() - started
        results["bytes"] = cache.bytes_on_disk()
        results["bytes_per_token"] = cache.bytes_on_disk() / ids.numel()
        results["bytes_per_scored_token"] = cache.bytes_on_disk() / int(shifted_mask(ids).sum())
        with torch.no_grad():
            dense_logits = [teacher(input_ids=ids[s : s + BATCH]).logits for s in range(0, len(ids), BATCH)]
        tails = {tail: TopKCache(Path(scratch) / "cache", tail=tail) for tail in ("renormalize", "uniform", "student")}
        rows = results["students"] = {}
        for keep in (6, 24):
            student = drop_layers(teacher, uniform_layers(30, keep)).eval()
            dense = token_weighted_kl(student, lambda start, batch: dense_logits[start // BATCH], ids)
            row = rows[f"{keep} of 30 layers"] = {"layers": uniform_layers(30, keep), "dense_forward_kl": dense}
            for tail, cached in tails.items():
                found = token_weighted_kl(
                    student, lambda start, batch, c=cached: c.teacher_for(range(start, start + len(batch))), ids
                )
                row[f"cached_{tail}"] = found
                row[f"relative_error_{tail}"] = (found - dense) / dense
            print(row, flush=True)
    lines = [
        f"| student | dense forward KL | k={K} renormalised | error | k={K} uniform tail | error "
        f"| k={K} student-shaped tail | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['dense_forward_kl']:.4f} | {row['cached_renormalize']:.4f} | "
            f"{100 * row['relative_error_renormalize']:+.2f}% | {row['cached_uniform']:.4f} | "
            f"{100 * row['relative_error_uniform']:+.2f}% | {row['cached_student']:.4f} | "
            f"{100 * row['relative_error_student']:+.2f}% |"
        )
    lines.append(
        f"\ncache: {results['bytes_per_token']:.1f} bytes per corpus token "
        f"({results['bytes_per_scored_token']:.1f} per scored token), {results['fill_seconds']:.0f} s to fill"
    )
    print("\n".join(lines))
    results["table"] = "\n".join(lines)
    atomic_write_json(RESULTS / "lm_cache.json", results)


if __name__ == "__main__":
    main()
