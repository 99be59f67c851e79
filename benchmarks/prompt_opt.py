"""Prompt optimisation (duolabel optimize-prompt) through the llama or openai labeler: before/after.

For each data set and seed: ``--golden`` golden items, the configured prompt (the data set's
instruction, 4 nearest golden examples), and :func:`search_prompt` over instructions x
bootstrapped demonstrations within ``--max-calls``. Reported per seed, then as the mean and
the seed-to-seed spread (std and min-max):

- *CV before/after*: the cross-validated accuracy and ECE on the golden items that the
  search itself reports (the after figure is the best of several candidates: optimistic);
- *held-out before/after*: the configured and the chosen prompt, each fitted on all golden
  items, on ``--test`` other items the search never saw (the unbiased comparison).

``--backend llama`` runs the bundled GGUF in-process; ``--backend openai`` starts
``llama_cpp.server`` on 127.0.0.1 serving the same GGUF (tests/llm_server.py) and labels and
generates the instruction candidates through the OpenAI-compatible API (one request at a
time, one answer token; the server computes log-probabilities over its whole vocabulary, so
each call is slower than in-process). Each path records its own section.

The verdict says whether the held-out gain is larger than its seed-to-seed spread. Gemma 3
270M is a weak base model: the figures check the mechanism, they are no quality claim.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.llm_server (--backend openai)

import llm_quality
from _record import record_section

from duolabel.core.calibration import calibration_metrics
from duolabel.labelers import EmbeddingLabeler, TextItem
from duolabel.labelers.cache import MemoryResponseCache
from duolabel.labelers.embedding import MemoryEmbeddingCache
from duolabel.labelers.prompt_search import search_prompt

DATASETS = "amazon_isbook,emotion"
PATHS = {
    "llama": "in-process",
    "openai": "served by llama_cpp.server on 127.0.0.1 (one request at a time, one answer token)",
}
RESPONSES = MemoryResponseCache()
HEADINGS = {
    "llama": "Prompt optimisation (benchmarks/prompt_opt.py)",
    "openai": "Prompt optimisation, openai path (benchmarks/prompt_opt.py --backend openai)",
}


def split(name: str, n_golden: int, n_test: int, seed: int, max_chars: int):
    """llm_quality.py's split (emotion: golden from train, held-out from validation), texts cut shorter."""
    golden, held, labels, instruction = llm_quality.split(name, n_golden, n_test, seed=seed)
    for row in golden + held:
        row["text"] = row["text"][:max_chars]
    return golden, held, labels, instruction


def items(rows: list[dict]) -> list[TextItem]:
    return [TextItem(r["id"], r["text"], r["id"]) for r in rows]


def held_out(labeler, golden, held, labels) -> dict[str, float]:
    labeler.fit(items(golden), [r["gold"] for r in golden])
    probs, _ = labeler.predict_proba(items(held))
    ok = ~np.isnan(probs).any(axis=1)
    gold = np.array([labels.index(r["gold"]) for r in held])
    metrics = calibration_metrics(np.where(ok[:, None], probs, 1.0 / len(labels)), gold)
    metrics["accuracy"] = float(((probs.argmax(axis=1) == gold) & ok).mean())
    return metrics


def spread(values: list[float]) -> str:
    v = np.array(values)
    return f"{v.mean():.3f} ± {v.std():.3f} ({v.min():.3f}-{v.max():.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--golden", type=int, default=60)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-calls", type=int, default=300)
    parser.add_argument("--max-chars", type=int, default=200)
    parser.add_argument("--datasets", default=DATASETS)
    parser.add_argument("--backend", choices=("llama", "openai"), default="llama")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--note", default="", help="a paragraph added to the recorded section (the reading)")
    parser.add_argument(
        "--from",
        dest="sources",
        nargs="+",
        help="render from the printed logs of earlier runs (one per data set, run at the same time) "
        "instead of running; give the same sizes and --backend as they had",
    )
    args = parser.parse_args()
    if args.sources:
        results: dict[str, list[dict]] = {}
        for source in args.sources:
            for line in Path(source).read_text(encoding="utf-8").splitlines():
                name, _, rest = line.partition(" ")
                if name in DATASETS.split(",") and rest.startswith("{"):
                    results.setdefault(name, []).append(json.loads(rest))
        render(args, results, None)
        return
    server = None
    if args.backend == "openai":
        os.environ.setdefault("OPENAI_API_KEY", "none")  # a local server takes any key
        from tests.llm_server import LlamaServer, gguf_path

        server = LlamaServer(gguf_path(), n_ctx=2048, args=["--n_threads", "1"]).start()
    try:
        run(args, server and server.base_url)
    finally:
        if server is not None:
            server.close()


def make_labeler(backend: str, server_url: str | None, labels, instruction, encode):
    """The configured prompt on either path: the data set's instruction, 4 nearest golden examples."""
    common = dict(labels=labels, instructions=instruction, few_shot=4, encode=encode)
    if backend == "llama":
        from duolabel.labelers.llama import LlamaLabeler

        return LlamaLabeler(**common, n_ctx=2048, n_threads=1)
    from tests.llm_server import MODEL_ALIAS

    from duolabel.labelers.openai import OpenAILabeler

    # One response cache for the run: the held-out "before" asks again what "after" asked when the
    # search kept the configured prompt (the same prompt text, so the same answer).
    return OpenAILabeler(
        **common,
        model=MODEL_ALIAS,
        base_url=server_url,
        answer_tokens=1,
        concurrency=1,
        timeout=300,
        cache=RESPONSES,
    )


def run(args: argparse.Namespace, server_url: str | None) -> None:
    encoder = EmbeddingLabeler(labels=["x", "y"], cache=MemoryEmbeddingCache())

    def encode(batch):
        return encoder.encode(batch)[0]

    encode.model_name = encoder.model_name  # type: ignore[attr-defined]
    results: dict[str, list[dict]] = {}
    started_all = time.perf_counter()
    for name in args.datasets.split(","):
        for seed in range(args.seeds):
            golden, held, labels, instruction = split(name, args.golden, args.test, seed, args.max_chars)
            labeler = make_labeler(args.backend, server_url, labels, instruction, encode)
            started = time.perf_counter()
            found = search_prompt(
                labeler,
                items(golden),
                [r["gold"] for r in golden],
                generate=labeler.complete,
                max_calls=args.max_calls,
                seed=seed,
            )
            search_s = time.perf_counter() - started
            after = held_out(labeler, golden, held, labels)  # left configured with the chosen prompt
            base = make_labeler(args.backend, server_url, labels, instruction, encode)
            if args.backend == "llama":  # the same loaded model
                base._llm, base._path = labeler._llm, labeler._path
                base._label_tokens, base._steps = labeler._label_tokens, labeler._steps
            before = held_out(base, golden, held, labels)
            row = {
                "seed": seed,
                "candidates": len(found.candidates),
                "calls": found.calls,
                "search_s": search_s,
                "chosen": found.chosen.name,
                "cv_acc_before": found.before.mean("accuracy"),
                "cv_acc_before_fold_std": found.before.std("accuracy"),
                "cv_acc_after": found.chosen.mean("accuracy"),
                "cv_acc_after_fold_std": found.chosen.std("accuracy"),
                "cv_ece_before": found.before.mean("ece"),
                "cv_ece_after": found.chosen.mean("ece"),
                "test_acc_before": before["accuracy"],
                "test_acc_after": after["accuracy"],
                "test_ece_before": before["ece"],
                "test_ece_after": after["ece"],
            }
            results.setdefault(name, []).append(row)
            print(name, json.dumps(row), flush=True)
    render(args, results, time.perf_counter() - started_all)


def render(args: argparse.Namespace, results: dict[str, list[dict]], total_s: float | None) -> None:
    """Print (and with ``--record`` record) the table; ``total_s`` is None when read ``--from`` logs."""
    sizes = (
        f"python benchmarks/prompt_opt.py --golden {args.golden} --test {args.test} "
        f"--seeds {args.seeds} --max-calls {args.max_calls} --max-chars {args.max_chars}"
    )
    path = f" --backend {args.backend}" if args.backend != "llama" else ""
    if args.sources:
        runs = "; ".join(f"`{sizes} --datasets {name}{path}`" for name in results)
        command = (
            f"- Commands: {runs} (one process per data set, at the same time, each with its own server); "
            f"rendered with `{sizes}{path} --from {' '.join(args.sources)}"
            + (" --record`" if args.record else "`")
        )
        seconds = [r["search_s"] for rows in results.values() for r in rows]
        minutes = np.array(seconds) / 60
        took = f"search time per seed {minutes.mean():.1f} min ({minutes.min():.1f}-{minutes.max():.1f})"
    else:
        command = (
            f"- Command: `{sizes}"
            + (f" --datasets {args.datasets}" if args.datasets != DATASETS else "")
            + path
            + (" --record`" if args.record else "`")
        )
        took = f"total {total_s / 60:.1f} min"
    lines = [
        command,
        f"- Machine: {os.cpu_count()} cores, Python {platform.python_version()}; llama.cpp threads: 1; "
        f"bundled Gemma 3 270M (base model), {PATHS[args.backend]}, "
        f"texts cut to {args.max_chars} characters; {took}",
        f"- Each seed draws {args.golden} golden items and {args.test} held-out items; the configured prompt "
        "is the data set's instruction with the 4 nearest golden examples; the search keeps to "
        f"{args.max_calls} LLM calls (3 folds). CV figures are the search's own (the after one is the best "
        "of several candidates, so optimistic); held-out figures fit each prompt on all golden items and "
        "label items the search never saw. Spreads: mean ± std (min-max) over seeds.",
        "",
        "| data | seeds | candidates | chosen (per seed) | CV acc before | CV acc after "
        "| held-out acc before | held-out acc after | held-out ECE before | held-out ECE after "
        "| gain (held-out acc) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for name, rows in results.items():
        gains = [r["test_acc_after"] - r["test_acc_before"] for r in rows]
        lines.append(
            f"| {name} | {len(rows)} | {np.mean([r['candidates'] for r in rows]):.0f} | "
            f"{'; '.join(r['chosen'] for r in rows)} | "
            + " | ".join(
                spread([r[key] for r in rows])
                for key in (
                    "cv_acc_before",
                    "cv_acc_after",
                    "test_acc_before",
                    "test_acc_after",
                    "test_ece_before",
                    "test_ece_after",
                )
            )
            + f" | {spread(gains)} |"
        )
        mean, std = float(np.mean(gains)), float(np.std(gains))
        beats = mean > 0 and mean > std
        verdicts.append(
            f"- {name}: held-out accuracy gain {mean:+.3f} with a seed-to-seed spread (std) of {std:.3f}: "
            + (
                "the optimised prompt beats the default by more than its spread."
                if beats
                else "the optimised prompt does **not** beat the default by more than its spread."
            )
        )
    body = "\n".join(lines + [""] + verdicts + ([args.note] if args.note else []))
    print(body)
    if args.record:
        record_section(HEADINGS[args.backend], body)


if __name__ == "__main__":
    main()
