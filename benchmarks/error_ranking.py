"""How well each signal ranks the model's errors on held-out items (issue 13, item 4).

The human share any routing guarantee needs is bounded by how well its score ranks the model's
errors, measured here as the AUROC of each signal for "the model's label is wrong" on test items
the model never saw, for the default ``embedding`` labeler (MiniLM + logistic head, temperature
calibration fitted on the golden items' out-of-fold probabilities, as ``duolabel run`` does):

- confidence, margin, entropy of the calibrated distribution;
- neighbourhood accuracy: the model's accuracy on the 10 golden items nearest each test item;
- combined: the meta-router (``routing.policy: meta``) trained on the golden items' cross-fitted
  signals (these plus text length), applied to the test items.

Ensemble disagreement needs a second labeler and is not measured here (it is 0 for one
labeler); prompt-variant disagreement for LLM labelers is not built.

Data: amazon_isbook (100 golden), medrel (150 golden), emotion (500 golden drawn from the
training split, the 2,000 validation tweets as test). Mean ± standard deviation over seeds (the
golden draw changes). Vectors are encoded once and kept in ``--cache`` (outside the repository).

    python benchmarks/error_ranking.py --seeds 5 [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))

from _record import record_section  # noqa: E402

from duolabel.core.calibration import CALIBRATORS, cross_validated  # noqa: E402
from duolabel.core.evidence import ERROR_SIGNALS, error_ranking, log_length, neighbourhood_accuracy  # noqa: E402
from duolabel.core.policies import MetaRouter  # noqa: E402
from duolabel.core.probs import signals  # noqa: E402
from duolabel.labelers import EmbeddingLabeler, TextItem  # noqa: E402
from duolabel.labelers.embedding import MemoryEmbeddingCache  # noqa: E402

SETS = {"amazon_isbook": 100, "medrel": 150, "emotion": 500}
SHOWN = ("confidence", "margin", "entropy", "neighbourhood_accuracy", "combined")


def vectors(name: str, cache: Path) -> tuple[list[dict], list[str], np.ndarray]:
    rows = [json.loads(line) for line in (DATA / name / "items.jsonl").open(encoding="utf-8")]
    rows = [r for r in rows if not r.get("control")]
    labels = json.loads((DATA / name / "labels.json").read_text(encoding="utf-8"))["labels"]
    path = cache / f"{name}-minilm-all.npy"
    if path.exists():
        return rows, labels, np.load(path)
    learning = Path("/work/bench/learning/emotion-minilm.npz")  # benchmarks/learning.py's vectors
    if name == "emotion" and learning.exists():
        saved = np.load(learning)
        X = np.zeros((len(rows), saved["X_pool"].shape[1]), dtype=saved["X_pool"].dtype)
        for split, key in (("train", "X_pool"), ("validation", "X_test")):
            X[[i for i, r in enumerate(rows) if r["split"] == split]] = saved[key]
        return rows, labels, X
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    X, _ = EmbeddingLabeler(labels=labels, cache=MemoryEmbeddingCache()).encode(
        [TextItem(r["id"], r["text"], r["id"]) for r in rows]
    )
    print(f"encoded {len(rows)} {name} items in {time.perf_counter() - started:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return rows, labels, X


def one_split(rows, labels, X, golden, test) -> dict[str, float]:
    memory = MemoryEmbeddingCache()
    items = [TextItem(r["id"], r["text"], r["id"]) for r in rows]
    memory.put(items, X)
    y = np.array([labels.index(r["gold"]) for r in rows])
    labeler = EmbeddingLabeler(labels=labels, cache=memory).fit(
        [items[i] for i in golden], [rows[i]["gold"] for i in golden]
    )
    oof = labeler.oof_proba_
    g_probs = cross_validated("temperature", oof, y[golden])
    raw, _ = labeler.predict_proba([items[i] for i in test])
    t_probs = CALIBRATORS.get("temperature")().fit(oof, y[golden]).transform(raw)
    g_right = (g_probs.argmax(axis=1) == y[golden]).astype(float)
    t_wrong = t_probs.argmax(axis=1) != y[test]
    texts = [r["text"] for r in rows]
    g_features = {
        "log_length": log_length([texts[i] for i in golden]),
        "neighbourhood_accuracy": neighbourhood_accuracy(
            X[golden], X[golden], g_right, own=list(range(len(golden)))
        ),
    }
    t_features = {
        "log_length": log_length([texts[i] for i in test]),
        "neighbourhood_accuracy": neighbourhood_accuracy(X[test], X[golden], g_right),
    }
    router = MetaRouter().fit(g_probs, g_features, g_right == 0)
    found = signals(t_probs)
    raw_signals = {
        "confidence": found["max_prob"],
        "margin": found["margin"],
        "entropy": found["entropy"],
        "neighbourhood_accuracy": t_features["neighbourhood_accuracy"],
    }
    out = error_ranking(raw_signals, t_wrong, combined=router.score(t_probs, t_features))
    out["accuracy"] = float(1 - t_wrong.mean())
    return out


def run(name: str, n_golden: int, seeds: int, cache: Path) -> dict[str, list[float]]:
    rows, labels, X = vectors(name, cache)
    figures: dict[str, list[float]] = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        if name == "emotion":
            pool = np.array([i for i, r in enumerate(rows) if r.get("split") == "train"])
            test = np.array([i for i, r in enumerate(rows) if r.get("split") == "validation"])
            golden = rng.choice(pool, n_golden, replace=False)
        else:
            order = rng.permutation(len(rows))
            golden, test = order[:n_golden], order[n_golden:]
        for key, value in one_split(rows, labels, X, golden, test).items():
            figures.setdefault(key, []).append(value)
    return figures


def fig(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("/work/bench/ranking"))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    table = [
        "| data set (golden items) | model accuracy | " + " | ".join(SHOWN) + " |",
        "|---|---|" + "---|" * len(SHOWN),
    ]
    for name, n_golden in SETS.items():
        figures = run(name, n_golden, args.seeds, args.cache)
        row = f"| {name} ({n_golden}) | {fig(figures['accuracy'])} | " + " | ".join(
            fig(figures[s]) for s in SHOWN
        )
        table.append(row + " |")
        print(row, flush=True)
    legend = "\n".join(f"- `{s}`: {ERROR_SIGNALS[s][0]}" for s in SHOWN)
    body = (
        f"Command: `python benchmarks/error_ranking.py --seeds {args.seeds} --record`. AUROC for the "
        "model's errors on held-out test items, embedding labeler with temperature calibration; mean "
        f"± standard deviation over {args.seeds} golden draws.\n\n"
        + "\n".join(table)
        + "\n\n"
        + legend
        + "\n\nHere `combined` is the meta-router trained on the golden items (their cross-fitted "
        "signals plus text length) and applied to the test items. Ensemble disagreement needs a "
        "second labeler and is not measured here; prompt-variant "
        "disagreement for LLM labelers is not built."
    )
    print(body)
    if args.record:
        record_section("Error ranking: AUROC of each routing signal", body)


if __name__ == "__main__":
    main()
