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

Hybrid (``--hybrid``, the embedding head only; encoder vectors cached on disk under /work/bench):
per seed, the head is fitted on the golden pairs, its out-of-fold golden probabilities certify a
confidence threshold for the target (:func:`duolabel.core.operating.certify_target`, risk 0.1)
and the test pairs above it are accepted, the rest go to people, *assumed exact*: model alone,
human share, accuracy of the accepted pairs and hybrid accuracy, over 5 seeds. Validity: per seed
the head's out-of-fold probabilities on the whole pool, then 40 random golden/test splits of them
(200 in all), each certifying on its golden part and checking the accepted test pairs' accuracy
against the target; the guarantee asks for it in at least 90% of the splits.
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
# The cached Gemma scores are per prompt: "_judge" is the pair prompt of labelers/llm_pairwise.py
# (the cache without a suffix holds the earlier prompt, the pair flattened into the item text).
PROMPT = "_judge"


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
    path = CACHE / f"gemma_orders{PROMPT}.json"
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
        timing = CACHE / f"gemma_seconds{PROMPT}.json"
        spent = json.loads(timing.read_text()) if timing.exists() else {"seconds": 0.0, "pairs": 0}
        timing.write_text(
            json.dumps({"seconds": spent["seconds"] + seconds, "pairs": spent["pairs"] + len(todo)})
        )
    shown = np.array([cached[i.id][0] for i in items], dtype=float)
    back = np.array([cached[i.id][1] for i in items], dtype=float)
    timing = CACHE / f"gemma_seconds{PROMPT}.json"
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


def _fitted_splits(head, items, labels, golden: int, *, base: int):
    """Per seed: the head fitted on ``golden`` random pairs, its probabilities on the rest."""
    for seed in range(SPLITS):
        order = np.random.default_rng(base + seed).permutation(len(items))
        train, test = order[:golden], order[golden:]
        head.random_state = seed
        head.fit([items[i] for i in train], [labels[i] for i in train])
        probs, _ = head.predict_proba([items[i] for i in test])
        yield seed, train, test, probs


def embedding_figures(items, gold, fields, golden: int) -> dict[str, list[float]]:
    encoder = EmbeddingLabeler(labels=LABELS)
    caches = {part: MemoryEmbeddingCache() for part in ("prompt", "a", "b")}
    head = PairwiseEmbeddingLabeler(encoder, lookup_from(fields), labels=LABELS, caches=caches)
    labels = [LABELS[g] for g in gold]
    acc: list[float] = []
    floor: list[float] = []
    for seed, train, test, probs in _fitted_splits(head, items, labels, golden, base=100):
        acc.append(float((probs.argmax(1) == gold[test]).mean()))
        floor.append(float((gold[test] == np.bincount(gold[train], minlength=2).argmax()).mean()))
        print(f"  embedding split {seed}: accuracy {acc[-1]:.3f} (C={head.fit_info_['C']})", flush=True)
    return {
        f"embedding head, {golden} golden pairs": acc,
        "baseline: the golden pairs' commonest answer": floor,
    }


class DiskEmbeddingCache:
    """Encoder vectors of one pair part kept in an .npz under /work/bench (a rerun encodes nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = np.load(path) if path.exists() else {}
        self._vectors = {key: data[key] for key in data}

    def get(self, items):
        return {
            i.id: self._vectors[i.id + "|" + i.content_hash]
            for i in items
            if i.id + "|" + i.content_hash in self._vectors
        }

    def put(self, items, vectors) -> None:
        self._vectors.update({i.id + "|" + i.content_hash: v for i, v in zip(items, vectors, strict=True)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(self.path, **self._vectors)


def _certified_split(scores, correct, golden_idx, test_idx, target: float, risk: float):
    """Certify on the golden part; the test part's human share and accepted accuracy."""
    from duolabel.core.operating import certify_target

    cert = certify_target(scores[golden_idx], correct[golden_idx], target=target, risk=risk)
    accepted = scores[test_idx] >= cert.threshold
    acc = float(correct[test_idx][accepted].mean()) if accepted.any() else float("nan")
    hybrid = float((correct[test_idx] | ~accepted).mean())  # people assumed exact
    return cert.certified, 1.0 - float(accepted.mean()), acc, hybrid


def hybrid_figures(
    items, gold, fields, golden: int, target: float, risk: float = 0.1
) -> dict[str, list[float]]:
    encoder = EmbeddingLabeler(labels=LABELS)
    caches = {part: DiskEmbeddingCache(CACHE / f"minilm_{part}.npz") for part in ("prompt", "a", "b")}
    head = PairwiseEmbeddingLabeler(encoder, lookup_from(fields), labels=LABELS, caches=caches)
    labels = [LABELS[g] for g in gold]
    out: dict[str, list[float]] = {k: [] for k in HYBRID}
    for seed, train, test, probs in _fitted_splits(head, items, labels, golden, base=200):
        oof = head.oof_proba_
        scores = np.concatenate([oof.max(1), probs.max(1)])
        correct = np.concatenate([oof.argmax(1) == gold[train], probs.argmax(1) == gold[test]])
        g, t = np.arange(len(train)), np.arange(len(train), len(items))
        certified, share, acc, hybrid = _certified_split(scores, correct, g, t, target, risk)
        out["model alone: accuracy"].append(float(correct[t].mean()))
        out["hybrid: certified"].append(float(certified))
        out["hybrid: human share"].append(share)
        out["hybrid: accuracy of the accepted pairs"].append(acc)
        out["hybrid: accuracy (people exact)"].append(hybrid)
        # Validity: the head's out-of-fold probabilities on the whole pool, 40 splits of them.
        head.fit(items, labels)
        pool_scores, pool_correct = head.oof_proba_.max(1), head.oof_proba_.argmax(1) == gold
        held, certs = [], []
        for split in range(VALIDITY_SPLITS // SPLITS):
            perm = np.random.default_rng(1000 * seed + split).permutation(len(items))
            ok, _, acc, _ = _certified_split(
                pool_scores, pool_correct, perm[:golden], perm[golden:], target, risk
            )
            certs.append(ok)
            held.append(not ok or np.isnan(acc) or acc >= target)
        out["validity: splits where the accepted pairs reach the target"].append(float(np.mean(held)))
        out["validity: splits certified"].append(float(np.mean(certs)))
        print(
            f"  hybrid seed {seed}: model {out['model alone: accuracy'][-1]:.3f}, share {share:.3f}",
            flush=True,
        )
    return out


HYBRID = (
    "model alone: accuracy",
    "hybrid: certified",
    "hybrid: human share",
    "hybrid: accuracy of the accepted pairs",
    "hybrid: accuracy (people exact)",
    "validity: splits where the accepted pairs reach the target",
    "validity: splits certified",
)
VALIDITY_SPLITS = 200


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
    parser.add_argument("--hybrid", action="store_true", help="only the embedding head's hybrid and validity")
    parser.add_argument("--target", type=float, default=0.7, help="the hybrid's accuracy target")
    parser.add_argument("--record", action="store_true", help="write the figures into docs/benchmarks.md")
    args = parser.parse_args()
    items, gold, fields = load(args.pool)
    if args.hybrid:
        return hybrid_main(args, items, gold, fields)
    print(f"LLM judge: Gemma 3 270M on {len(items)} llmbar pairs, both orders", flush=True)
    shown, back, per_pair = llm_orders(items, fields)
    timing = CACHE / f"gemma_seconds{PROMPT}.json"
    spent = json.loads(timing.read_text())["pairs"] if timing.exists() else 0
    figures = llm_figures(shown, back, gold)
    lines = [
        f"Command: `python benchmarks/pairwise.py --pool {args.pool} --golden {args.golden} --record` — "
        f"{date.today().isoformat()}, "
        f"llmbar ({len(items)} pairs drawn at random from 885; gold A on {(gold == 0).mean():.0%} of them, "
        f"on 50% of all 885), {SPLITS} disjoint "
        f"subsamples of ~{len(items) // SPLITS} pairs: mean, std, min–max over them.",
        "",
        "Bundled Gemma 3 270M (a base model: it exercises the path, it is no judge), zero-shot with "
        "the judge's pair prompt (`labelers/llm_pairwise.pair_prompt`: the judging rules, the "
        "instruction, `Output (a)` and `Output (b)`), each "
        "pair scored as shown and with A and B swapped (P(label) from the label tokens), "
        f"{per_pair:.1f} s per pair for both orders on one thread of a shared 2-core machine "
        f"(measured on the {spent} pairs scored with timing; the scores are cached).",
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


def hybrid_main(args, items, gold, fields) -> None:
    print(f"Embedding head hybrid on {len(items)} llmbar pairs, target {args.target}", flush=True)
    start = time.perf_counter()
    figures = hybrid_figures(items, gold, fields, args.golden, args.target)
    text = "\n".join(
        [
            f"Command: `python benchmarks/pairwise.py --hybrid --pool {args.pool} "
            f"--golden {args.golden} --target {args.target} --record` — {date.today().isoformat()}, "
            f"llmbar ({len(items)} pairs drawn at random from 885), {SPLITS} seeds of a "
            f"{args.golden}-pair golden / test split (mean, std, min–max over seeds); validity over "
            f"{VALIDITY_SPLITS} golden/test splits of the head's out-of-fold probabilities "
            f"({VALIDITY_SPLITS // SPLITS} per seed); risk 0.1; people assumed exact (no crowd answers "
            f"are recorded for llmbar). {time.perf_counter() - start:.0f} s.",
            "",
            "| figure | mean | std | min–max |",
            "|---|---|---|---|",
            *[row(name, figures[name]) for name in HYBRID],
        ]
    )
    print(text)
    if args.record:
        title = f"Pairwise hybrid on LLMBar: embedding head, target {args.target} (pairwise.py --hybrid)"
        record_section(title, text)


if __name__ == "__main__":
    main()
