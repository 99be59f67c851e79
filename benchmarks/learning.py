"""Learning curves on frozen embeddings: heads and active-learning strategies.

    python benchmarks/learning.py [--cache DIR] [--seeds 5] [--record]

emotion (6 labels): the pool is the train split (16k tweets), every figure is measured on the
validation split (2k), never seen by a head. The bundled MiniLM encodes both splits once; the
vectors are kept in ``--cache`` (default ``/work/bench/learning``, outside the repository).

(a) Heads at 100, 200, 500, 1,000 and 2,000 random labels: frozen + logistic regression with
    C=1 (today's default), C by stratified CV on the training labels, the tuned head (CV C and
    balanced class weights), and both with kNN self-training (pseudo-labels drawn from the rest
    of the pool). Accuracy and error-detection AUROC (how well the top probability separates
    right from wrong answers on validation), mean ± std over the seeds.
(b) Active learning with the CV-C head (balanced weights cost accuracy in (a)): a seed set
    of 100 chosen by ``cold_start`` (k-means on the embeddings; the same for every strategy of
    a seed), then rounds of 100 up to 2,000, each strategy choosing from the whole unlabelled
    pool. Accuracy at 100/200/500/1,000/2,000 and the labels the best strategy needs to reach
    random's 1,000-label accuracy. C is chosen by CV on the labels so far at each reported
    size and kept in between.

Encoding runs on one torch thread; the heads use the CPUs as scikit-learn does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))

from _record import record_section  # noqa: E402

from duolabel.core.strategies import STRATEGIES  # noqa: E402
from duolabel.labelers import EmbeddingLabeler, TextItem  # noqa: E402
from duolabel.labelers.embedding import MemoryEmbeddingCache  # noqa: E402

SIZES = (100, 200, 500, 1000, 2000)
HEADS = {
    "frozen+LR C=1": {},
    "CV C": {"regularization": "cv"},
    "tuned (CV C, balanced)": {"regularization": "cv", "class_weight": "balanced"},
    "tuned + self-training": {"regularization": "cv", "class_weight": "balanced", "self_training": True},
    "CV C + self-training": {"regularization": "cv", "self_training": True},
}
AL_HEAD = "CV C"
AL_STRATEGIES = ("random", "least_confidence", "margin", "entropy", "kcenter", "badge")


def load_vectors(cache: Path) -> dict[str, np.ndarray]:
    """Vectors and gold label indices of both splits, encoded once and kept in ``cache``."""
    path = cache / "emotion-minilm.npz"
    if path.exists():
        return dict(np.load(path))
    import torch

    torch.set_num_threads(1)
    with (DATA / "emotion" / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    labels = json.loads((DATA / "emotion" / "labels.json").read_text(encoding="utf-8"))["labels"]
    encoder = EmbeddingLabeler(labels=labels, cache=MemoryEmbeddingCache())
    out: dict[str, np.ndarray] = {"labels": np.array(labels)}
    for split, name in (("train", "pool"), ("validation", "test")):
        part = [r for r in rows if r["split"] == split]
        started = time.perf_counter()
        X, _ = encoder.encode([TextItem(r["id"], r["text"], r["id"]) for r in part])
        print(f"encoded {len(part)} {split} items in {time.perf_counter() - started:.0f} s", flush=True)
        out[f"X_{name}"] = X
        out[f"y_{name}"] = np.array([labels.index(r["gold"]) for r in part])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def head(
    labels: list[str],
    options: dict,
    X: np.ndarray,
    y: np.ndarray,
    pool: np.ndarray,
    seed: int,
    C: float | None = None,
):
    """The embedding labeler's head fitted on ``(X, y)`` (with ``pool`` for self-training).

    Calls the labeler's own head fitting (C choice, pseudo-labels) without the out-of-fold
    cross-fitting ``fit`` adds for calibration, which a learning curve does not use.
    """
    labeler = EmbeddingLabeler(labels=labels, random_state=seed, **options)
    folds = min(labeler.cv_folds, int(np.bincount(y, minlength=len(labels)).min()))
    C = labeler._choose_C(X, y, folds) if C is None else C
    fitted, _ = labeler._fit_head(X, y, C, pool)
    return fitted, C


def scores(model, X: np.ndarray, y: np.ndarray, n_labels: int) -> tuple[float, float]:
    """Accuracy and error-detection AUROC (top probability: right vs wrong) on ``(X, y)``."""
    from sklearn.metrics import roc_auc_score

    proba = np.zeros((len(X), n_labels))
    proba[:, model.classes_] = model.predict_proba(X)
    right = proba.argmax(axis=1) == y
    auroc = roc_auc_score(right, proba.max(axis=1)) if 0 < right.sum() < len(right) else float("nan")
    return float(right.mean()), float(auroc)


def random_labels(y: np.ndarray, n: int, n_labels: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random pool rows, redrawn until every label has at least 2 (the head needs them)."""
    while True:
        rows = rng.choice(len(y), n, replace=False)
        if np.bincount(y[rows], minlength=n_labels).min() >= 2:
            return rows


def heads_curve(data: dict, labels: list[str], seeds: int) -> dict:
    results: dict = {name: {n: [] for n in SIZES} for name in HEADS}
    for seed in range(seeds):
        for n in SIZES:
            rows = random_labels(data["y_pool"], n, len(labels), np.random.default_rng([seed, n]))
            rest = np.setdiff1d(np.arange(len(data["y_pool"])), rows)
            for name, options in HEADS.items():
                started = time.perf_counter()
                model, C = head(
                    labels, options, data["X_pool"][rows], data["y_pool"][rows], data["X_pool"][rest], seed
                )
                acc, auroc = scores(model, data["X_test"], data["y_test"], len(labels))
                results[name][n].append((acc, auroc, C, time.perf_counter() - started))
            print(
                f"heads seed {seed} n={n}: "
                + ", ".join(f"{k} {v[n][-1][0]:.3f}" for k, v in results.items()),
                flush=True,
            )
    return results


def al_curve(data: dict, labels: list[str], seeds: int, strategies: tuple[str, ...]) -> dict:
    # The AL head: C by CV without class weights (in (a) balanced weights cost emotion accuracy).
    options = HEADS[AL_HEAD]
    X, y = data["X_pool"], data["y_pool"]
    rounds = list(range(100, max(SIZES) + 1, 100))
    results: dict = {name: [] for name in strategies}
    timing: dict = {name: [] for name in strategies}
    for seed in range(seeds):
        start = STRATEGIES.get("cold_start")().select(None, 100, embeddings=X, seed=seed)
        for name in strategies:
            strategy = STRATEGIES.get(name)()
            chosen = list(start)
            curve, select_s, C = [], 0.0, None
            while True:
                rows = np.array(chosen)
                # A label with under 2 examples cannot be cross-validated: the head then uses
                # C=1 (the labeler's own fallback); absent labels get probability 0.
                # C is chosen by CV on the labels so far at 100, 200, 500, 1,000 and 2,000 labels
                # and kept in between (CV at every round would cost 20 searches per curve).
                if len(chosen) in SIZES:
                    C = None
                model, C = head(labels, options, X[rows], y[rows], X[:0], seed, C)
                acc, _ = scores(model, data["X_test"], data["y_test"], len(labels))
                curve.append(acc)
                if len(chosen) >= rounds[-1]:
                    break
                rest = np.setdiff1d(np.arange(len(y)), rows)
                proba = np.zeros((len(rest), len(labels)))
                proba[:, model.classes_] = model.predict_proba(X[rest])
                started = time.perf_counter()
                picks = strategy.select(
                    proba, 100, embeddings=X[rest], labeled=X[rows], seed=seed * 1000 + len(chosen)
                )
                select_s += time.perf_counter() - started
                chosen += rest[picks].tolist()
            results[name].append(curve)
            timing[name].append(select_s / (len(rounds) - 1))
            print(
                f"AL seed {seed} {name}: " + " ".join(f"{curve[r // 100 - 1]:.3f}" for r in SIZES), flush=True
            )
    return {"rounds": rounds, "curves": results, "select_s": timing}


def mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{np.nanmean(values):.3f} ± {np.nanstd(values):.3f}"


def heads_table(results: dict) -> str:
    lines = [
        "| head | " + " | ".join(f"{n} labels" for n in SIZES) + " |",
        "|---|" + "---|" * len(SIZES),
    ]
    for name, by_size in results.items():
        acc = " | ".join(mean_std([r[0] for r in by_size[n]]) for n in SIZES)
        auroc = " | ".join(mean_std([r[1] for r in by_size[n]]) for n in SIZES)
        lines.append(f"| {name}: accuracy | {acc} |")
        lines.append(f"| {name}: error AUROC | {auroc} |")
    tuned = results["CV C"]
    chosen = " · ".join(f"{n}: {sorted({r[2] for r in tuned[n]})}" for n in SIZES)
    seconds = " · ".join(
        f"{name} {np.mean([r[3] for n in SIZES for r in by[n]]):.1f} s" for name, by in results.items()
    )
    return (
        "\n".join(lines) + f"\n\nC chosen by CV (per size): {chosen}.\n\nMean fit time per head: {seconds}.\n"
    )


def al_table(al: dict) -> tuple[str, dict]:
    rounds = al["rounds"]
    means = {name: np.mean(np.array(curves), axis=0) for name, curves in al["curves"].items()}
    lines = [
        "| strategy | " + " | ".join(f"{n} labels" for n in SIZES) + " | select s/round |",
        "|---|" + "---|" * (len(SIZES) + 1),
    ]
    for name, curves in al["curves"].items():
        curves = np.array(curves)
        cells = " | ".join(mean_std(curves[:, rounds.index(n)]) for n in SIZES)
        lines.append(f"| {name} | {cells} | {np.mean(al['select_s'][name]):.2f} |")
    target = means["random"][rounds.index(1000)]
    needed = {
        name: next((rounds[i] for i, acc in enumerate(curve) if acc >= target), None)
        for name, curve in means.items()
    }
    reached = {k: v for k, v in needed.items() if v is not None}
    best = min(reached, key=lambda k: reached[k]) if reached else None
    summary = (
        f"\nRandom's accuracy at 1,000 labels (mean over seeds): {target:.3f}. Labels each strategy needs "
        "to reach it (mean curve): "
        + ", ".join(f"{k} {v if v is not None else '> 2000'}" for k, v in needed.items())
        + (f". Best: **{best}**, {reached[best]} labels (target <= 500).\n" if best else ".\n")
    )
    return "\n".join(lines) + "\n" + summary, needed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cache", type=Path, default=Path("/work/bench/learning"), help="where the vectors are kept"
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--part", choices=["heads", "al", "both"], default="both")
    parser.add_argument("--strategies", default=",".join(AL_STRATEGIES))
    parser.add_argument("--record", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args()
    data = load_vectors(args.cache)
    labels = [str(label) for label in data["labels"]]
    header = (
        f"`python benchmarks/learning.py --seeds {args.seeds}` on {date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs. emotion: pool = train split ({len(data['y_pool'])}), measured on the "
        f"validation split ({len(data['y_test'])}); bundled MiniLM vectors, frozen. Mean ± std over "
        f"{args.seeds} seeds.\n"
    )
    # Each part is kept beside the vectors, so the two can run separately and be recorded together.
    if args.part in ("heads", "both"):
        started = time.perf_counter()
        table = heads_table(heads_curve(data, labels, args.seeds))
        print(table)
        part = f"### (a) Heads, random labels ({time.perf_counter() - started:.0f} s)\n\n{table}"
        (args.cache / "learning-heads.md").write_text(part, encoding="utf-8")
    if args.part in ("al", "both"):
        started = time.perf_counter()
        al = al_curve(data, labels, args.seeds, tuple(args.strategies.split(",")))
        table, _needed = al_table(al)
        print(table)
        part = (
            f"### (b) Active learning, head {AL_HEAD!r} ({time.perf_counter() - started:.0f} s)\n\n"
            "Seed set: 100 items by `cold_start` (the same for every strategy of a seed), then rounds "
            "of 100 chosen from the whole unlabelled pool (no subsampling). C by CV at each reported size, "
            "kept between them.\n\n" + table
        )
        (args.cache / "learning-al.md").write_text(part, encoding="utf-8")
    if args.record:
        parts = [args.cache / f"learning-{name}.md" for name in ("heads", "al")]
        body = "\n".join([header] + [p.read_text(encoding="utf-8") for p in parts if p.exists()])
        record_section("Learning curves on frozen embeddings (emotion)", body)


if __name__ == "__main__":
    main()
