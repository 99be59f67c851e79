"""Synthetic training items from the bundled Gemma 3 270M (llama backend) for the embedding labeler.

    python benchmarks/synthetic.py [--record] [--per-label 10] [--seeds 3] [--test 300]

On ``amazon_isbook`` and ``emotion``, per seed: 20 golden items are drawn (at least
20 // labels of each label), ``duolabel generate --mode zero-shot`` writes ``--per-label``
items per label with ``synthetic.seed`` = the seed, and the embedding labeler (frozen MiniLM
+ logistic head, C = 1) is trained on (a) the 20 golden items, (b) the synthetic items only,
(c) both; accuracy is measured on the same ``--test`` items for all three (never golden,
never shown to the generator). Reported: mean and min-max over seeds, the diversity figures
and rejections of each generation, the llama labeler's agreement with the intended label,
and generation speed (kept items per second the model spent generating, rejected candidates
included in the time).

Gemma 3 270M is a small *base* model: this checks the mechanism and reports honestly what a
small model gives; it says nothing of what a large instruction-tuned model would give.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))

from _record import record_section  # noqa: E402

from duolabel import Project  # noqa: E402
from duolabel.labelers import EmbeddingLabeler, TextItem  # noqa: E402
from duolabel.labelers.embedding import MemoryEmbeddingCache  # noqa: E402
from duolabel.training_data import synthetic_training_items  # noqa: E402

INSTRUCTIONS = {
    "amazon_isbook": "Decide whether the Amazon product review is about a book.",
    "emotion": "Decide which emotion the tweet expresses.",
}


def load(name: str) -> tuple[list[dict], list[str], str]:
    """Rows, labels and the data set's own instruction (the task as its annotators read it)."""
    with (DATA / name / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    meta = json.loads((DATA / name / "labels.json").read_text(encoding="utf-8"))
    return rows, meta["labels"], meta.get("instruction") or INSTRUCTIONS[name]


def draw_golden(rows: list[dict], labels: list[str], n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    order = [rows[i] for i in rng.permutation(len(rows))]
    each = n // len(labels)
    golden = [r for label in labels for r in [x for x in order if x["gold"] == label][:each]]
    taken = {r["id"] for r in golden}
    golden += [r for r in order if r["id"] not in taken][: n - len(golden)]
    return golden


def accuracy(train: list[TextItem], gold: list[str], test: list[TextItem], truth: list[str], labels, cache):
    head = EmbeddingLabeler(labels=labels, regularization=1.0, cache=cache).fit(train, gold)
    probs, _ = head.predict_proba(test)
    return float(np.mean([labels[i] == t for i, t in zip(probs.argmax(axis=1), truth, strict=True)]))


def one_seed(name: str, rows, test_rows, labels, instructions: str, seed: int, per_label: int, cache) -> dict:
    golden = draw_golden([r for r in rows if r not in test_rows], labels, 20, seed)
    folder = Path(tempfile.mkdtemp(prefix=f"synthetic-{name}-"))
    config = {
        "task": {"labels": [{"name": label} for label in labels], "instructions": instructions},
        "labeler": [{"backend": "llama", "few_shot": 0, "n_threads": os.cpu_count() or 1}],
        "synthetic": {"seed": seed, "max_tokens": 40},
    }
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with Project.open(folder) as project:
        frame = pd.DataFrame([{"id": r["id"], "text": r["text"], "gold": r["gold"]} for r in golden])
        project.add_items(frame, role="golden", gold_column="gold")
        project.add_items(pd.DataFrame([{"id": r["id"], "text": r["text"]} for r in test_rows]))
        result = project.generate(per_label=per_label, mode="zero-shot")
        synth, intended = synthetic_training_items(project, 0)
        run_seconds = result.generation_seconds
    gold_items = [TextItem(r["id"], r["text"], r["id"]) for r in golden]
    gold_labels = [r["gold"] for r in golden]
    test = [TextItem(r["id"], r["text"], r["id"]) for r in test_rows]
    truth = [r["gold"] for r in test_rows]
    out = {
        "golden": accuracy(gold_items, gold_labels, test, truth, labels, cache),
        "kept": len(synth),
        "items_s": len(synth) / run_seconds,
        "figures": result.figures,
        "rejected": result.rejected,
    }
    missing = [label for label in labels if label not in intended]
    out["synthetic"] = (
        None if missing else accuracy(synth, intended, test, truth, labels, MemoryEmbeddingCache())
    )
    out["both"] = accuracy(
        gold_items + synth, gold_labels + intended, test, truth, labels, MemoryEmbeddingCache()
    )
    return out


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the section of docs/benchmarks.md")
    parser.add_argument("--per-label", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--sets", nargs="+", default=["amazon_isbook", "emotion"])
    args = parser.parse_args()
    lines = [
        f"`python benchmarks/synthetic.py --per-label {args.per_label} --seeds {args.seeds} "
        f"--test {args.test}`, "
        f"{date.today()}, {platform.machine()}, {os.cpu_count()} cores (shared), bundled Gemma 3 270M "
        "(base model, llama backend), zero-shot mode, embedding labeler with C = 1. Accuracy on the same "
        "test items for (a) 20 golden items, (b) synthetic items only, (c) both: mean (min-max) over seeds. "
        "A small base model: the figures check the mechanism, not what a large model would give.",
        "",
        "| data set | seeds | (a) 20 golden | (b) synthetic only | (c) golden + synthetic | kept items "
        "| items/s | distinct-1 | distinct-2 | pairwise distance | agreement (llama) | rejected |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.sets:
        rows, labels, instructions = load(name)
        rng = np.random.default_rng(12345)
        pool = [r for r in rows if r.get("split", "validation") != "train"] if name == "emotion" else rows
        test_rows = [pool[i] for i in rng.choice(len(pool), size=min(args.test, len(pool)), replace=False)]
        train_rows = [r for r in rows if r.get("split") == "train"] if name == "emotion" else rows
        train_rows = [
            train_rows[i] for i in rng.choice(len(train_rows), size=min(2000, len(train_rows)), replace=False)
        ]
        cache = MemoryEmbeddingCache()
        results = []
        for seed in range(args.seeds):
            started = time.perf_counter()
            results.append(
                one_seed(name, train_rows, test_rows, labels, instructions, seed, args.per_label, cache)
            )
            print(name, seed, json.dumps(results[-1]), f"{time.perf_counter() - started:.0f} s", flush=True)
        figures = {
            key: spread([r["figures"].get(key) for r in results])
            for key in ("distinct_1", "distinct_2", "pairwise_distance", "agreement_share")
        }
        rejected: dict[str, int] = {}
        for r in results:
            for why, n in r["rejected"].items():
                rejected[why] = rejected.get(why, 0) + n
        lines.append(
            f"| {name} | {args.seeds} | {spread([r['golden'] for r in results])} "
            f"| {spread([r['synthetic'] for r in results])} | {spread([r['both'] for r in results])} "
            f"| {spread([r['kept'] for r in results])} | {spread([r['items_s'] for r in results])} "
            f"| {figures['distinct_1']} | {figures['distinct_2']} | {figures['pairwise_distance']} "
            f"| {figures['agreement_share']} | {', '.join(f'{k} {v}' for k, v in sorted(rejected.items()))} |"
        )
    body = "\n".join(lines)
    print(body)
    if args.record:
        record_section("Synthetic training items (zero-shot, Gemma 3 270M)", body)


if __name__ == "__main__":
    main()
