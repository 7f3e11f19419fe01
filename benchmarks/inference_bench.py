"""Inference throughput: the llmjobs kinds against bare transformers loops, on random checkpoints.

Not a test. Both parts build random-weight checkpoints locally with the tiny checkpoints'
tokenizer, so the figures measure speed only; the outputs are meaningless.

- write: a Qwen2 decoder of about 60M parameters (hidden 512, 8 layers), prompts of mixed
  length, 32 new tokens each. WriteKind.run over length-sorted micro-batches against a bare
  ``model.generate`` loop at its best batch size, and against one prompt at a time.
- moderate: a MiniLM-sized XLM-RoBERTa classifier (hidden 384, 12 layers) over COLD texts.
  ModerateKind.run over length-sorted micro-batches against a bare batched loop in file order.

Usage: python benchmarks/inference_bench.py [--prompts N] [--single-prompts N] [--texts N]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmjobs.checkpoints.corpus import training_lines
from llmjobs.checkpoints.tiny import build_causal_lm, build_classifier
from llmjobs.checkpoints.tokenizer import train_byte_level_bpe
from llmjobs.config import Settings
from llmjobs.worker.batching import form_micro_batches
from llmjobs.worker.engine import load_checkpoint
from llmjobs.worker.kinds.base import JobKind, WorkItem
from llmjobs.worker.kinds.moderate import ModerateKind
from llmjobs.worker.kinds.prompts import encode_prompt
from llmjobs.worker.kinds.write import WriteKind

COLD = Path(__file__).resolve().parents[2] / "shared" / "data" / "cold_zh_offensive"
NEW_TOKENS = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000, help="write prompts for the batched runs")
    parser.add_argument("--single-prompts", type=int, default=100, help="prompts for the one-at-a-time run")
    parser.add_argument("--texts", type=int, default=10_000, help="COLD texts for the moderation runs")
    parser.add_argument("--batch-sizes", default="8,16,32,64", help="bare generate batch sizes to try")
    parser.add_argument("--skip", choices=["write", "moderate"], action="append", default=[])
    args = parser.parse_args()

    import torch

    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )
    work = Path(tempfile.mkdtemp(prefix="llmjobs-bench-"))
    tokenizer = train_byte_level_bpe()
    settings = Settings.load(
        environ={"LLMJOBS_HOME": str(work)},
        device="cpu",
        dtype="float32",
        max_new_tokens=NEW_TOKENS,
        max_batch_size=32,
        max_batch_tokens=16_384,
    )
    if "write" not in args.skip:
        bench_write(work, tokenizer, settings, args)
    if "moderate" not in args.skip:
        bench_moderate(work, tokenizer, settings, args)


def bench_write(work: Path, tokenizer: Any, settings: Settings, args: argparse.Namespace) -> None:
    folder = work / "decoder-60m"
    build_causal_lm(folder, tokenizer, hidden_size=512, layers=8, heads=8, kv_heads=8, intermediate_size=4096)
    checkpoint = load_checkpoint(str(folder), "write", settings, "cpu")
    parameters = sum(p.numel() for p in checkpoint.model.parameters())
    kind = WriteKind(checkpoint, settings)
    prompts = mixed_prompts(args.prompts)
    items = [WorkItem(index, "bench", text, {}) for index, text in enumerate(prompts)]
    encoded = [encode_prompt(checkpoint.tokenizer, [{"role": "user", "content": text}]) for text in prompts]
    lengths = sorted(len(ids) for ids in encoded)
    report(
        "write setup",
        parameters=parameters,
        prompts=len(prompts),
        prompt_tokens_min=lengths[0],
        prompt_tokens_median=lengths[len(lengths) // 2],
        prompt_tokens_max=lengths[-1],
    )

    seconds = run_kind(kind, items, settings)
    report("write WriteKind.run, length-sorted micro-batches", prompts=len(items), seconds=seconds)

    sizes = [int(size) for size in args.batch_sizes.split(",")]
    best = sizes[0]
    if len(sizes) > 1:
        trial = encoded[: min(len(encoded), 64)]
        trials = {size: bare_generate(checkpoint, trial, size) for size in sizes}
        best = min(trials, key=lambda size: trials[size])
        report(
            "write bare generate batch-size trial",
            prompts=len(trial),
            seconds_by_batch_size={size: round(value, 2) for size, value in trials.items()},
        )
    seconds = bare_generate(checkpoint, encoded, best)
    report("write bare generate, file order", batch_size=best, prompts=len(encoded), seconds=seconds)

    single = encoded[: args.single_prompts]
    seconds = bare_generate(checkpoint, single, 1)
    report("write one prompt at a time", prompts=len(single), seconds=seconds)


def bench_moderate(work: Path, tokenizer: Any, settings: Settings, args: argparse.Namespace) -> None:
    folder = work / "classifier-minilm"
    build_classifier(folder, tokenizer, hidden_size=384, layers=12, heads=12)
    checkpoint = load_checkpoint(str(folder), "moderate", settings, "cpu")
    parameters = sum(p.numel() for p in checkpoint.model.parameters())
    texts = cold_texts(args.texts)
    kind = ModerateKind(checkpoint, settings)
    items = [WorkItem(index, "bench", text, {}) for index, text in enumerate(texts)]
    report("moderate setup", parameters=parameters, texts=len(texts))

    seconds = run_kind(kind, items, settings)
    report("moderate ModerateKind.run, length-sorted micro-batches", texts=len(items), seconds=seconds)
    seconds = bare_classify(checkpoint, texts, settings.max_batch_size)
    report(
        "moderate bare batched loop, file order",
        batch_size=settings.max_batch_size,
        texts=len(texts),
        seconds=seconds,
    )


def run_kind(kind: JobKind, items: Sequence[WorkItem], settings: Settings) -> float:
    started = time.perf_counter()
    batches = form_micro_batches(
        items, kind.token_counts(items), kind.group_key, settings.max_batch_size, settings.max_batch_tokens
    )
    for batch in batches:
        results = kind.run(batch)
        assert all(result.status == "succeeded" for result in results)
    return time.perf_counter() - started


def bare_generate(checkpoint: Any, encoded: Sequence[Sequence[int]], batch_size: int) -> float:
    import torch

    tokenizer, model = checkpoint.tokenizer, checkpoint.model
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            batch = tokenizer.pad(
                {"input_ids": [list(ids) for ids in encoded[start : start + batch_size]]}, return_tensors="pt"
            )
            model.generate(
                **batch, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
    return time.perf_counter() - started


def bare_classify(checkpoint: Any, texts: Sequence[str], batch_size: int) -> float:
    import torch

    tokenizer, model = checkpoint.tokenizer, checkpoint.model
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=512,
                return_tensors="pt",
            )
            model(**batch).logits.sigmoid()
    return time.perf_counter() - started


def mixed_prompts(count: int) -> list[str]:
    """Return prompts of 1 to 24 corpus lines each (about 10 to 600 tokens), in random order."""
    rng = random.Random(7)
    lines = training_lines()
    return [
        " ".join(rng.choice(lines) for _ in range(rng.choice((1, 1, 2, 3, 6, 12, 24)))) for _ in range(count)
    ]


def cold_texts(count: int) -> list[str]:
    """Return count texts from COLD's test split, continuing into the dev split when test has fewer."""
    texts: list[str] = []
    for name in ("test.csv", "dev.csv"):
        with (COLD / name).open(encoding="utf-8-sig", newline="") as handle:
            texts.extend(row["TEXT"] for row in csv.DictReader(handle) if row["TEXT"].strip())
        if len(texts) >= count:
            break
    return texts[:count]


def report(name: str, **figures: Any) -> None:
    if "seconds" in figures:
        count = figures.get("prompts") or figures.get("texts")
        figures["seconds"] = round(figures["seconds"], 2)
        figures["items_per_s"] = round(count / figures["seconds"], 2)
    print(json.dumps({"run": name, **figures}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
