"""Pairwise preference on LLMBar: the bundled Gemma judging both orders, and the embedding head.

    python benchmarks/pairwise.py [--pool 500] [--record]

LLM judge: the bundled Gemma 3 270M (a base model, weak as a judge) scores a fixed random pool
of llmbar pairs zero-shot, each as shown and with A and B swapped
(:class:`duolabel.labelers.llm_pairwise.PairwiseLLMLabeler`); the per-order distributions are
cached under /work/bench (so a rerun scores nothing twice). Figures are means over 5 disjoint
subsamples of the pool, with their min-max: accuracy of the order as shown, of the swapped order
alone, of the two orders averaged; the swap-consistency rate; how often the shown order picks A
(position bias); and the routing that sends swap-inconsistent pairs to people (human share,
accuracy of the pairs the model keeps); each raw, and with each order calibrated on the other
subsamples as the labeler does on golden pairs. Pairs too long for the 2,048-token context
abstain and count as wrong / as routed to people.

Embedding head: the frozen MiniLM on prompt and responses, the logistic-regression head on the
pair features with swap augmentation (:class:`duolabel.labelers.pairwise.
PairwiseEmbeddingLabeler`), over 5 seeds of a golden/test split of the same pool.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import record_section  # noqa: E402

from duolabel.core.pairwise import OrderCalibrator  # noqa: E402
from duolabel.labelers.base import TextItem  # noqa: E402
from duolabel.labelers.embedding import EmbeddingLabeler, MemoryEmbeddingCache  # noqa: E402
from duolabel.labelers.llm_pairwise import PairwiseLLMLabeler  # noqa: E402
from duolabel.labelers.pairwise import PairwiseEmbeddingLabeler, pair_of  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "llmbar" / "items.jsonl"
CACHE = Path(os.environ.get("DUOLABEL_BENCH", "/work/bench")) / "pairwise"
LABELS = ["A", "B"]
DESCRIPTIONS = ["Response A is better", "Response B is better"]
SPLITS = 5


def load(pool: int) -> tuple[list[TextItem], np.ndarray, dict[str, dict[str, str]]]:
    """A fixed random pool of ``pool`` pairs (seed 0): items, gold indices, their responses."""
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    picked = np.random.default_rng(0).permutation(len(rows))[:pool]
    chosen = [rows[i] for i in picked]
    items = [TextItem(r["id"], r["text"], r["id"]) for r in chosen]
    fields = {r["id"]: {"response_a": r["response_a"], "response_b": r["response_b"]} for r in chosen}
    gold = np.array([LABELS.index(r["gold"]) for r in chosen])
    return items, gold, fields


def instructions() -> str:
    return json.loads((DATA.parent / "labels.json").read_text(encoding="utf-8"))["instruction"]


def lookup_from(fields: dict[str, dict[str, str]]):
    return lambda items: [pair_of(item, fields[item.id]) for item in items]


def llm_orders(items: list[TextItem], fields) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-order distributions (shown, swapped mapped back) of every pool pair, cached per pair."""
    from duolabel.labelers.llama import LlamaLabeler

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "gemma_orders.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    todo = [item for item in items if item.id not in cached]
    seconds = 0.0
    if todo:
        backend = LlamaLabeler(
            labels=LABELS, descriptions=DESCRIPTIONS, instructions=instructions(), n_ctx=2048, few_shot=0,
            n_threads=int(os.environ.get("BENCH_THREADS", "1")),
        )  # fmt: skip
        judge = PairwiseLLMLabeler(backend, lookup_from(fields), inconsistent="keep").fit([], [])
        started = time.perf_counter()
        for start in range(0, len(todo), 10):
            part = todo[start : start + 10]
            judge.predict_proba(part)
            shown, back = judge.orders_
            for item, s, b in zip(part, shown, back, strict=True):
                cached[item.id] = [s.tolist(), b.tolist()]
            path.write_text(json.dumps(cached))
            print(f"  scored {start + len(part)}/{len(todo)} pairs", flush=True)
        seconds = time.perf_counter() - started
        backend.close()
        timing = CACHE / "gemma_seconds.json"
        spent = json.loads(timing.read_text()) if timing.exists() else {"seconds": 0.0, "pairs": 0}
        timing.write_text(
            json.dumps({"seconds": spent["seconds"] + seconds, "pairs": spent["pairs"] + len(todo)})
        )
    shown = np.array([cached[i.id][0] for i in items], dtype=float)
    back = np.array([cached[i.id][1] for i in items], dtype=float)
    timing = CACHE / "gemma_seconds.json"
    spent = json.loads(timing.read_text()) if timing.exists() else {"seconds": 0.0, "pairs": 0}
    return shown, back, spent["seconds"] / max(spent["pairs"], 1)


def llm_figures(shown: np.ndarray, back: np.ndarray, gold: np.ndarray) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in FIGURES}
    answered = ~(np.isnan(shown).any(axis=1) | np.isnan(back).any(axis=1))
    parts = np.array_split(np.random.default_rng(1).permutation(len(gold)), SPLITS)
    for k, part in enumerate(parts):
        # Per-order calibration as the labeler does it, fitted on the other subsamples
        # (the golden pairs) and applied to this one.
        rest = np.concatenate([p for j, p in enumerate(parts) if j != k])
        rest = rest[answered[rest]]
        cal_s = OrderCalibrator().fit(shown[rest], gold[rest])
        cal_b = OrderCalibrator().fit(back[rest], gold[rest])
        for suffix, (s, b) in {
            "": (shown[part], back[part]),
            ", per-order calibrated": (cal_s.transform(shown[part]), cal_b.transform(back[part])),
        }.items():
            g, ok = gold[part], answered[part]
            s, b = np.nan_to_num(s, nan=0.5), np.nan_to_num(b, nan=0.5)
            pick_s, pick_b, pick_m = s.argmax(1), b.argmax(1), (s + b).argmax(1)
            kept = ok & (pick_s == pick_b)
            out["accuracy, order as shown" + suffix].append(float(((pick_s == g) & ok).mean()))
            out["accuracy, swapped order alone" + suffix].append(float(((pick_b == g) & ok).mean()))
            out["accuracy, both orders averaged" + suffix].append(float(((pick_m == g) & ok).mean()))
            out["swap-consistent pairs" + suffix].append(float(kept.mean()))
            out["order as shown picks A" + suffix].append(float((pick_s[ok] == 0).mean()))
            out["routing: human share (inconsistent or abstained)" + suffix].append(float(1 - kept.mean()))
            accepted = float((pick_m[kept] == g[kept]).mean()) if kept.any() else np.nan
            out["routing: accuracy of the accepted pairs" + suffix].append(accepted)
        out["abstained (longer than the context)"].append(float(1 - answered[part].mean()))
        # What knowing only the golden pairs' commonest answer gets: the floor to beat.
        majority = np.bincount(gold[rest], minlength=2).argmax()
        out["baseline: the golden pairs' commonest answer"].append(float((gold[part] == majority).mean()))
    return out


_BASE = [
    "accuracy, order as shown",
    "accuracy, swapped order alone",
    "accuracy, both orders averaged",
    "swap-consistent pairs",
    "order as shown picks A",
    "routing: human share (inconsistent or abstained)",
    "routing: accuracy of the accepted pairs",
]
FIGURES = [
    *_BASE,
    *[f"{name}, per-order calibrated" for name in _BASE],
    "abstained (longer than the context)",
    "baseline: the golden pairs' commonest answer",
]


def embedding_figures(items, gold, fields, golden: int) -> dict[str, list[float]]:
    encoder = EmbeddingLabeler(labels=LABELS)
    caches = {part: MemoryEmbeddingCache() for part in ("prompt", "a", "b")}
    head = PairwiseEmbeddingLabeler(encoder, lookup_from(fields), labels=LABELS, caches=caches)
    labels = [LABELS[g] for g in gold]
    acc: list[float] = []
    floor: list[float] = []
    for seed in range(SPLITS):
        order = np.random.default_rng(100 + seed).permutation(len(items))
        train, test = order[:golden], order[golden:]
        head.random_state = seed
        head.fit([items[i] for i in train], [labels[i] for i in train])
        probs, _ = head.predict_proba([items[i] for i in test])
        acc.append(float((probs.argmax(1) == gold[test]).mean()))
        floor.append(float((gold[test] == np.bincount(gold[train], minlength=2).argmax()).mean()))
        print(f"  embedding split {seed}: accuracy {acc[-1]:.3f} (C={head.fit_info_['C']})", flush=True)
    return {
        f"embedding head, {golden} golden pairs": acc,
        "baseline: the golden pairs' commonest answer": floor,
    }


def row(name: str, values: list[float]) -> str:
    v = np.array(values, dtype=float)
    if np.isnan(v).all():
        return f"| {name} | n/a (no pair) | | |"
    return f"| {name} | {np.nanmean(v):.3f} | {np.nanstd(v):.3f} | {np.nanmin(v):.3f}–{np.nanmax(v):.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=500, help="llmbar pairs scored (a fixed random pool)")
    parser.add_argument("--golden", type=int, default=200, help="golden pairs per embedding split")
    parser.add_argument("--skip-embedding", action="store_true")
    parser.add_argument("--record", action="store_true", help="write the figures into docs/benchmarks.md")
    args = parser.parse_args()
    items, gold, fields = load(args.pool)
    print(f"LLM judge: Gemma 3 270M on {len(items)} llmbar pairs, both orders", flush=True)
    shown, back, per_pair = llm_orders(items, fields)
    figures = llm_figures(shown, back, gold)
    lines = [
        f"Command: `python benchmarks/pairwise.py --pool {args.pool} --golden {args.golden} --record` — "
        f"{date.today().isoformat()}, "
        f"llmbar ({len(items)} pairs drawn at random from 885; gold A on {(gold == 0).mean():.0%} of them, "
        f"on 50% of all 885), {SPLITS} disjoint "
        f"subsamples of ~{len(items) // SPLITS} pairs: mean, std, min–max over them.",
        "",
        "Bundled Gemma 3 270M (a base model: it exercises the path, it is no judge), zero-shot, each "
        "pair scored as shown and with A and B swapped (P(label) from the label tokens), "
        f"{per_pair:.1f} s per pair for both orders on one thread of a shared 2-core machine "
        "(measured when the pairs were scored; the scores are cached).",
        "",
        "| figure | mean | std | min–max |",
        "|---|---|---|---|",
        *[row(name, figures[name]) for name in FIGURES],
        "",
        "Reading: a judge that always prefers one position is swap-inconsistent on every pair, so the "
        "routing sends every pair to people. Per-order calibration removes a position bias the golden "
        "pairs show; but where the judge carries little signal beyond its bias, what it learns is close "
        "to the golden pairs' commonest answer, and the two calibrated orders then agree because both "
        "say that answer: compare its rows with the baseline row before reading its consistency as skill.",
    ]
    if not args.skip_embedding:
        print("Embedding head: MiniLM + logistic regression, swap-augmented", flush=True)
        emb = embedding_figures(items, gold, fields, args.golden)
        lines += [
            "",
            f"Embedding head (MiniLM, pair features, swap augmentation; swap-symmetric by construction): "
            f"accuracy on the rest of the pool over {SPLITS} seeds of a golden/test split.",
            "",
            "| figure | mean | std | min–max |",
            "|---|---|---|---|",
            *[row(name, values) for name, values in emb.items()],
        ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section("Pairwise preference on LLMBar (benchmarks/pairwise.py)", text)


if __name__ == "__main__":
    main()
