"""Label scoring (LlamaLabeler) against naive generation, same GGUF model, prompts and items.

Items: ``--items`` amazon_isbook items (texts cut to ``--chars`` characters), drawn with a
fixed seed; 4 golden examples (2 per label) drawn with the same seed from the other items.
The labels, the instructions from the data set's labels.json and the prompts are the same
for both methods: every prompt is ``LlamaLabeler.prompts(items)``.

* scoring:  ``LlamaLabeler.predict_proba`` - the probability of each label's tokens after
  the prompt, with ``logits_all=False`` and the KV cache reused across items and labels.
* naive:    what other labeling tools do - a ``logits_all=True`` model and
  ``create_completion(prompt, max_tokens=8, temperature=0, logprobs=5, stop="\\n")``; the
  generated text is matched to a label (``duolabel.labelers.openai.match_label``; no match
  is an abstention) and the probability of the generated tokens is its confidence.
  llama-cpp-python reuses the previous prompt's prefix here too.

Both models are loaded and run once on one item before the clock starts; the model load is
reported apart. Timings are wall clock and process CPU time (the machine may be shared).

    python benchmarks/llama_scoring.py                 # 40 items, bundled Gemma 3 270M
    python benchmarks/llama_scoring.py --items 20 --model path/to/model.gguf
    python benchmarks/llama_scoring.py --record        # also write its section of docs/benchmarks.md

Target: scoring >= 5x the items/s of naive generation.

The bundled Gemma 3 270M is a base model and a weak labeler: its accuracies here say
nothing about what a real instruction-tuned model would reach.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from duolabel.labelers.base import TextItem
from duolabel.labelers.llama import LlamaLabeler, default_model_path
from duolabel.labelers.openai import match_label

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "amazon_isbook"
SEED = 20241123
TARGET_SPEEDUP = 5.0


def load_items(n: int, chars: int, seed: int) -> tuple[list[TextItem], list[str], list[TextItem], list[str]]:
    rows = [json.loads(line) for line in (DATA / "items.jsonl").open(encoding="utf-8")]
    order = np.random.default_rng(seed).permutation(len(rows))
    picked = [rows[i] for i in order[:n]]
    rest = [rows[i] for i in order[n:]]
    golden_rows = [r for r in rest if r["gold"] == "book"][:2] + [r for r in rest if r["gold"] == "not_book"][
        :2
    ]

    def item(row: dict) -> TextItem:
        return TextItem(row["id"], row["text"][:chars], row["id"])

    return (
        [item(r) for r in picked],
        [r["gold"] for r in picked],
        [item(r) for r in golden_rows],
        [r["gold"] for r in golden_rows],
    )


def naive_generate(
    llm, labels: list[str], prompts: list[str | None]
) -> tuple[list[str | None], list[float], int]:
    """Generate an answer per prompt and read it as a label, as generation-based tools do.

    Returns the label each answer names (None: no clear label, an abstention), the
    probability of the generated tokens (the confidence such tools report) and the number
    of tokens generated.
    """
    decided: list[str | None] = []
    confidence: list[float] = []
    generated = 0
    for prompt in prompts:
        if prompt is None:
            decided.append(None)
            confidence.append(float("nan"))
            continue
        out = llm.create_completion(
            llm.tokenize(prompt.encode(), add_bos=True),
            max_tokens=8,
            temperature=0.0,
            logprobs=5,
            stop=["\n"],
        )
        choice = out["choices"][0]
        generated += out["usage"]["completion_tokens"]
        index = match_label(choice["text"], labels)
        decided.append(None if index is None else labels[index])
        logprobs = (choice["logprobs"] or {}).get("token_logprobs", [])
        confidence.append(math.exp(sum(lp for lp in logprobs if lp is not None)))
    return decided, confidence, generated


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "",
    )
    import llama_cpp

    return (
        f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, llama-cpp-python {llama_cpp.__version__}"
    )


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def decisions(probs: np.ndarray, labels: list[str]) -> list[str | None]:
    return [None if np.isnan(row).any() else labels[int(row.argmax())] for row in probs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--chars", type=int, default=300, help="item texts are cut to this many characters")
    parser.add_argument("--model", default=None, help="GGUF file (default: the bundled Gemma 3 270M)")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: half the cores)"
    )
    parser.add_argument("--record", action="store_true", help="rewrite this section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/llama_scoring.py" + "".join(
        f" {shlex.quote(a)}" for a in (argv or sys.argv[1:])
    )
    load_at_start = load_average()

    task = json.loads((DATA / "labels.json").read_text())
    labels = task["labels"]
    items, gold, golden, golden_gold = load_items(args.items, args.chars, SEED)
    labeler = LlamaLabeler(
        labels=labels,
        instructions=task["instruction"],
        model_path=args.model,
        n_ctx=args.n_ctx,
        few_shot=4,
        n_threads=args.threads,
    ).fit(golden, golden_gold)
    # Warm-up on a golden item (its own prompt, three examples): it loads the model and
    # leaves the shared prefix in the cache, as any earlier batch would, for both methods.
    warm_up = golden[:1]
    _, load_scoring, _ = timed(lambda: labeler.predict_proba(warm_up))
    prompts = labeler.prompts(items)
    model_file = Path(args.model) if args.model else default_model_path()
    threads = args.threads or max(1, (os.cpu_count() or 2) // 2)  # LlamaLabeler's default

    import llama_cpp

    def load_naive():
        with contextlib.redirect_stderr(io.StringIO()):
            return llama_cpp.Llama(
                model_path=str(model_file),
                n_ctx=args.n_ctx,
                logits_all=True,
                verbose=False,
                seed=0,
                n_threads=threads,
                n_threads_batch=threads,
            )

    naive_llm, load_naive_s, _ = timed(load_naive)
    naive_generate(naive_llm, labels, labeler.prompts(warm_up))

    (scored, usage), s_wall, s_cpu = timed(lambda: labeler.predict_proba(items))
    (naive_labels, naive_confidence, generated), n_wall, n_cpu = timed(
        lambda: naive_generate(naive_llm, labels, prompts)
    )

    scored_labels = decisions(scored, labels)
    both = [
        (a, b) for a, b in zip(scored_labels, naive_labels, strict=True) if a is not None and b is not None
    ]
    agreement = sum(a == b for a, b in both) / len(both) if both else float("nan")

    def accuracy(predicted: list[str | None]) -> str:
        right = sum(p == g for p, g in zip(predicted, gold, strict=True))
        answered = sum(p is not None for p in predicted)
        return f"{right / len(gold):.1%} ({right}/{len(gold)}; {len(gold) - answered} abstained)"

    n = len(items)
    majority = max(labels, key=gold.count)
    speedup = (n / s_wall) / (n / n_wall)
    prompt_tokens = int(usage.extra["prompt_tokens"])
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## LLM label scoring (benchmarks/llama_scoring.py)",
        "",
        f"- Command: `{command}`",
        f"- Date: {when}",
        f"- Machine: {machine()}; llama.cpp threads: {threads}",
        f"- Load average (1/5/15 min) at the start and at the end: {load_at_start}; {load_average()}",
        f"- Model: {model_file.name} ({model_file.stat().st_size / 1e6:.0f} MB)"
        + ("" if args.model else "; the bundled base model, weak as a labeler: accuracy here is no target"),
        f"- Items: {n} amazon_isbook items cut to {args.chars} characters, 4 golden examples (2 per label), "
        f"n_ctx {args.n_ctx}; prompts average {prompt_tokens / n:.0f} tokens",
        f"- Model load (+ one warm-up item): scoring {load_scoring:.2f} s, naive {load_naive_s:.2f} s, "
        "not in the rates",
        "",
        "| method | seconds | items/s | CPU-s | items/CPU-s | tokens evaluated |",
        "|---|--:|--:|--:|--:|--:|",
        f"| scoring (logits_all=False, KV reuse) | {s_wall:.2f} | {n / s_wall:.2f} | {s_cpu:.2f} | "
        f"{n / s_cpu:.2f} | {usage.input_tokens:,} prompt + {int(usage.extra['label_tokens']):,} label "
        f"(of {prompt_tokens:,} prompt tokens) |",
        f"| naive generation (logits_all=True) | {n_wall:.2f} | {n / n_wall:.2f} | {n_cpu:.2f} | "
        f"{n / n_cpu:.2f} | prompts + {generated:,} generated |",
        "",
        f"- Speed-up (items/s): **{speedup:.1f}x** (target >= {TARGET_SPEEDUP:.0f}x: "
        f"**{'PASS' if speedup >= TARGET_SPEEDUP else 'MISS'}**)",
        f"- Same label decided by both: {agreement:.1%} of the {len(both)} items both decided",
        f"- Accuracy vs gold: scoring {accuracy(scored_labels)}; naive {accuracy(naive_labels)}; "
        f"always '{majority}': {gold.count(majority) / n:.1%}",
        f"- Mean confidence in the decided label: scoring {np.nanmean(scored.max(axis=1)):.3f}, "
        f"naive {np.nanmean(naive_confidence):.3f}",
        f"- Scoring abstentions (prompt too long): {int(usage.extra['abstained'])}",
    ]
    print("\n".join(lines))
    if args.record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _record import record_section  # the helper every benchmarks/ script shares

        record_section(lines[0].removeprefix("## "), "\n".join(lines[2:]))
        print("recorded in docs/benchmarks.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
