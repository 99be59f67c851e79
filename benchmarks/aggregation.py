"""Aggregation quality, anchoring, model+human fusion and scale.

    python benchmarks/aggregation.py crowds [--record]   # medrel, politifact_truth vs gold and crowd-kit
    python benchmarks/aggregation.py fusion [--record]   # embedding model + people on amazon_isbook, medrel
    python benchmarks/aggregation.py scale [--record]    # 1,000,000 generated answers

1. ``crowds``: accuracy vs gold of every aggregator on the real crowds, side by side with
   crowd-kit 1.4.2's implementation of the same method on the same answers (target: equal
   within 0.5 points), and the runtime ratio; Dawid-Skene with known answers vs without.
2. ``fusion``: the ``embedding`` labeler trained on a seeded golden draw (out-of-fold,
   temperature-calibrated probabilities on the golden items, calibrated predictions on the
   rest) fused with the crowd's answers, against the best human-only aggregator, on the
   items outside the golden draw.
3. ``scale``: 200,000 items x 5 answers from 500 simulated workers; each aggregator and
   crowd-kit's counterpart in a fresh process: wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))

from _record import record_section  # noqa: E402

from duolabel.core.aggregation import GLAD, MACE, DawidSkene, MajorityVote, WeightedMajorityVote  # noqa: E402
from duolabel.core.quality import control_accuracy  # noqa: E402


def quiet_crowdkit() -> None:
    # crowd-kit 1.4.2 uses pandas' deprecated `inplace=`; the warnings say nothing about results
    from pandas.errors import Pandas4Warning

    warnings.filterwarnings("ignore", category=Pandas4Warning)


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    with (DATA / name / "items.jsonl").open(encoding="utf-8") as handle:
        items = pd.DataFrame([json.loads(line) for line in handle]).set_index("id")
    labels = json.loads((DATA / name / "labels.json").read_text(encoding="utf-8"))["labels"]
    with (DATA / name / "annotations.jsonl").open(encoding="utf-8") as handle:
        answers = pd.DataFrame([json.loads(line) for line in handle])
    answers = answers.rename(columns={"item_id": "task", "annotator": "worker"})[["task", "worker", "label"]]
    return items, answers, labels


def acc(labels: pd.Series, gold: pd.Series) -> float:
    return float((labels.loc[gold.index] == gold).mean())


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def header(command: str) -> list[str]:
    load1, load5, load15 = os.getloadavg()
    return [
        f"- Command: `{command}`",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC; {platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other work), Python {platform.python_version()}, "
        "crowd-kit 1.4.2",
        f"- Load average (1/5/15 min) when the figures were printed: {load1:.2f} / {load5:.2f} / "
        f"{load15:.2f}",
        "",
    ]


# ---------------------------------------------------------------------------
# 1. Real crowds against crowd-kit


def _crowd(name: str) -> tuple[list[str], str]:
    from crowdkit.aggregation import GLAD as CkGLAD
    from crowdkit.aggregation import MACE as CkMACE
    from crowdkit.aggregation import DawidSkene as CkDS
    from crowdkit.aggregation import MajorityVote as CkMV
    from crowdkit.aggregation import Wawa as CkWawa

    rows: list[str] = []
    items, answers, labels = load(name)
    controls = items[items.get("control", pd.Series(False, index=items.index)).fillna(False).astype(bool)]
    gold = items.loc[~items.index.isin(controls.index), "gold"]
    known = controls["gold"].to_dict()
    level = {label: i for i, label in enumerate(labels)}

    def mae(pred: pd.Series, gold: pd.Series = gold) -> float:
        return float(np.abs(pred.loc[gold.index].map(level) - gold.map(level)).mean())

    skills = {}
    if known:
        table = control_accuracy(answers, labels, known)
        skills = ((table["correct"] + 1) / (table["controls"] + 2)).to_dict()
    ours: dict[str, Callable[[], pd.Series]] = {
        "majority_vote": lambda: MajorityVote(labels=labels).fit_predict(answers),
        "weighted_majority_vote": lambda: WeightedMajorityVote(labels=labels, skills=skills).fit_predict(
            answers
        ),
        "dawid_skene (crowd-kit settings)": lambda: DawidSkene(
            labels=labels, smoothing=0.0, diagonal_prior=0.0
        ).fit_predict(answers),
        "dawid_skene": lambda: DawidSkene(labels=labels).fit_predict(answers),
        "glad": lambda: GLAD(labels=labels).fit_predict(answers),
        "mace": lambda: MACE(labels=labels).fit_predict(answers),
    }
    theirs: dict[str, Callable[[], pd.Series] | None] = {
        "majority_vote": lambda: CkMV().fit_predict(answers),
        "weighted_majority_vote": None,
        "dawid_skene (crowd-kit settings)": lambda: CkDS(n_iter=100).fit_predict(answers),
        "dawid_skene": None,
        "glad": lambda: CkGLAD().fit_predict(answers),
        "mace": lambda: CkMACE().fit_predict(answers),
    }
    for method, fit in ours.items():
        pred, secs = timed(fit)
        note = " (no controls: = MV)" if method.startswith("weighted") and not skills else ""
        row = f"| {name} | {method}{note}"
        row += f" | {acc(pred, gold):.4f} |"
        other = theirs[method]
        if other is None:
            row += " — | — | — | " + f"{secs:.2f} | — | — |"
        else:
            their_pred, their_secs = timed(other)
            delta = 100 * (acc(pred, gold) - acc(their_pred, gold))
            row += (
                f" {acc(their_pred, gold):.4f} | {delta:+.2f} | {'yes' if abs(delta) <= 0.5 else 'NO'} |"
                f" {secs:.2f} | {their_secs:.2f} | {their_secs / secs:.1f} |"
            )
        row += f" {mae(pred):.3f} |" if name == "politifact_truth" else " — |"
        rows.append(row)
        print(row, flush=True)
    # Majority vote differs only in how ties are broken (ours: the label order of labels.json;
    # crowd-kit's: the first column of its own table); compare on the items without a tie.
    counts = answers.groupby(["task", "label"]).size().unstack(fill_value=0)
    untied = counts.index[(counts.eq(counts.max(axis=1), axis=0)).sum(axis=1) == 1]
    g = gold.loc[gold.index.isin(untied)]
    ours_mv, their_mv = MajorityVote(labels=labels).fit_predict(answers), CkMV().fit_predict(answers)
    rows.append(
        f"| {name} | majority_vote, {len(g)} untied items only | {acc(ours_mv, g):.4f} | "
        f"{acc(their_mv, g):.4f} |"
        f" {100 * (acc(ours_mv, g) - acc(their_mv, g)):+.2f} | | | | | |"
    )
    try:
        CkWawa().fit_predict(answers)
        wawa = "ran"
    except Exception as exc:  # the failure ENVIRONMENT.md warns about
        wawa = f"fails: {type(exc).__name__} ({str(exc)[:60]}…)"
    rows.append(f"| {name} | crowd-kit Wawa (not used) | — | {wawa} | | | | | | |")

    # Known answers: politifact's controls; for medrel a seeded 10% golden draw.
    if not known:
        rng = np.random.default_rng(11)
        draw = rng.choice(len(items), size=len(items) // 10, replace=False)
        known = items["gold"].iloc[np.sort(draw)].to_dict()
    scored = gold.loc[~gold.index.isin(list(known))]
    plain = DawidSkene(labels=labels).fit_predict(answers)
    anchored = DawidSkene(labels=labels).fit_predict(answers, known=known)
    ck_known = CkDS(n_iter=100).fit_predict(answers, true_labels=pd.Series(known))
    ours_ck = DawidSkene(labels=labels, smoothing=0.0, diagonal_prior=0.0).fit_predict(answers, known=known)
    kind = "control items" if name == "politifact_truth" else "seeded 10% draw"
    anchor = (
        f"| {name} | {len(known)} ({kind}) | "
        f"{len(scored)} | {acc(plain, scored):.4f} | {acc(anchored, scored):.4f} | "
        f"{100 * (acc(anchored, scored) - acc(plain, scored)):+.2f} | {acc(ours_ck, scored):.4f} | "
        f"{acc(ck_known, scored):.4f} |"
    )
    print(anchor, flush=True)
    return rows, anchor


def crowds() -> str:
    quiet_crowdkit()
    lines = header("python benchmarks/aggregation.py crowds --record")
    lines += [
        "Accuracy vs gold of each aggregator on all answers of the data set. politifact_truth is scored",
        "on its 120 statements (its 2 control items, answered by every worker, are left out of the",
        "score); its gold is ordinal, so the mean absolute error in scale levels (MAE) is given too.",
        "*crowd-kit* is crowd-kit 1.4.2's class for the same method on the same answers; *ratio* is",
        "crowd-kit's runtime over ours. `dawid_skene (crowd-kit settings)` is ours with `smoothing=0,",
        "diagonal_prior=0`, the same model as crowd-kit's; `dawid_skene` is our default (Dirichlet",
        "pseudo-counts 0.01 + 1 on the diagonal). GLAD and MACE run crowd-kit's code on rows and",
        "workers put in a canonical order first (so MACE draws its random restarts in another order).",
        "",
        "| data | method | ours | crowd-kit | Δ points | within 0.5 | ours s | crowd-kit s | ratio "
        "| MAE ours |",
        "|---|---|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    anchors: list[str] = []
    for name in ["medrel", "politifact_truth"]:
        rows, anchor = _crowd(name)
        lines += rows
        anchors.append(anchor)
    lines += [
        "",
        "Dawid-Skene with known answers (their true label fixed in every E-step) vs without, scored on the",
        "items whose answer was not given. The last two columns are the crowd-kit-settings model with the",
        "same known answers, ours and crowd-kit's (`fit(..., true_labels=...)`).",
        "",
        "| data | known items | scored | without | with | Δ points | ours (crowd-kit settings) | crowd-kit |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
        *anchors,
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# 2. Model + human fusion


def model_probas(
    items: pd.DataFrame, labels: list[str], n_golden: int, seed: int
) -> tuple[pd.DataFrame, dict]:
    """Calibrated embedding-labeler probabilities: out-of-fold on a golden draw, predicted elsewhere."""
    from duolabel.core.calibration import TemperatureScaling
    from duolabel.labelers import EmbeddingLabeler, TextItem
    from duolabel.labelers.embedding import MemoryEmbeddingCache

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    golden, rest = items.iloc[np.sort(order[:n_golden])], items.iloc[np.sort(order[n_golden:])]

    def texts(frame: pd.DataFrame) -> list[TextItem]:
        return [TextItem(i, t, i) for i, t in zip(frame.index, frame["text"], strict=True)]

    y = np.array([labels.index(g) for g in golden["gold"]])
    labeler = EmbeddingLabeler(labels=labels, cache=MemoryEmbeddingCache()).fit(
        texts(golden), list(golden["gold"])
    )
    probs, _ = labeler.predict_proba(texts(rest))
    calibrator = TemperatureScaling().fit(labeler.oof_proba_, y)
    frame = pd.DataFrame(
        np.vstack([calibrator.transform(labeler.oof_proba_), calibrator.transform(probs)]),
        index=list(golden.index) + list(rest.index),
        columns=labels,
    )
    return frame, golden["gold"].to_dict()


def subsample(answers: pd.DataFrame, per_item: int, seed: int) -> pd.DataFrame:
    shuffled = answers.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("task", sort=False).head(per_item).sort_values(["task", "worker"])


def fusion() -> str:
    quiet_crowdkit()
    lines = header("python benchmarks/aggregation.py fusion --record")
    lines += [
        "The `embedding` labeler (all-MiniLM-L6-v2 + logistic regression) is trained on a seeded golden",
        "draw; its temperature-calibrated out-of-fold probabilities on the golden items and calibrated",
        "predictions on the other items are the model's vote. As in a project, the golden items' gold",
        "labels are known answers for every method. Scores are on the items outside the golden draw.",
        "*best human-only* is the most accurate of majority vote, Dawid-Skene (with the known answers),",
        "GLAD and MACE, chosen after seeing the scores (which favours it). *fused* is",
        "`DawidSkene(fuse_model=True)` (the model's confusion matrix learned jointly on every item);",
        '*model judged on golden* is `model_errors="known"` (its matrix learned on the golden items',
        "only). Rows with *k* answers/item keep a seeded random k answers per item, as a project with",
        "overlap k would have.",
        "",
        "| data | golden | scored | answers/item | model alone | MV | DS | GLAD | MACE | best human-only "
        "| fused | Δ points | fused, model judged on golden | Δ points |",
        "|---|--:|--:|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for name, n_golden in [("amazon_isbook", 150), ("medrel", 100)]:
        items, answers, labels = load(name)
        probas, known = model_probas(items, labels, n_golden, seed=7)
        scored = items.loc[~items.index.isin(list(known)), "gold"]
        scored = scored.loc[scored.index.isin(answers["task"])]
        model_alone = probas.loc[scored.index].idxmax(axis=1)
        for per_item in [None, 3, 1]:
            subset = answers if per_item is None else subsample(answers, per_item, seed=3)
            human = {
                "MV": MajorityVote(labels=labels).fit_predict(subset, known=known, model_probas=probas),
                "DS": DawidSkene(labels=labels).fit_predict(subset, known=known),
                "GLAD": GLAD(labels=labels).fit_predict(subset, known=known),
                "MACE": MACE(labels=labels).fit_predict(subset, known=known),
            }
            scores = {k: acc(v, scored) for k, v in human.items()}
            best = max(scores, key=scores.get)
            fused = DawidSkene(labels=labels, fuse_model=True).fit_predict(
                subset, known=known, model_probas=probas
            )
            judged = DawidSkene(labels=labels, fuse_model=True, model_errors="known").fit_predict(
                subset, known=known, model_probas=probas
            )
            row = (
                f"| {name} | {len(known)} | {len(scored)} | {'all' if per_item is None else per_item} | "
                f"{acc(model_alone, scored):.4f} | "
                + " | ".join(f"{scores[k]:.4f}" for k in ["MV", "DS", "GLAD", "MACE"])
                + f" | {best} {scores[best]:.4f} | {acc(fused, scored):.4f} | "
                f"{100 * (acc(fused, scored) - scores[best]):+.2f} | {acc(judged, scored):.4f} | "
                f"{100 * (acc(judged, scored) - scores[best]):+.2f} |"
            )
            lines.append(row)
            print(row, flush=True)
    lines += [
        "",
        "MV breaks its ties with the model's probabilities (as the project does), so it already uses the",
        "model a little; DS, GLAD and MACE see only the people.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# 3. Scale: one aggregator per fresh process

N_ITEMS = int(os.environ.get("AGG_BENCH_ITEMS", "200000"))  # smaller only for a trial run
PER_ITEM, N_WORKERS, LABELS = 5, 500, ["a", "b", "c", "d"]


def generate(seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """200,000 items x 5 distinct workers of 500; accuracies uniform in [0.55, 0.95], errors uniform."""
    rng = np.random.default_rng(seed)
    k = len(LABELS)
    truth = rng.integers(0, k, N_ITEMS)
    base = rng.integers(0, N_WORKERS, N_ITEMS)[:, None]
    steps = np.concatenate(
        [np.zeros((N_ITEMS, 1), int), rng.integers(1, 100, (N_ITEMS, PER_ITEM - 1))], axis=1
    )
    workers = ((base + steps.cumsum(axis=1)) % N_WORKERS).ravel()  # 5 distinct workers per item
    tasks = np.repeat(np.arange(N_ITEMS), PER_ITEM)
    skill = rng.uniform(0.55, 0.95, N_WORKERS)
    right = rng.random(len(tasks)) < skill[workers]
    wrong = (truth[tasks] + rng.integers(1, k, len(tasks))) % k
    given = np.where(right, truth[tasks], wrong)
    task_names = np.array([f"t{i:06d}" for i in range(N_ITEMS)], dtype=object)
    frame = pd.DataFrame(
        {
            "task": task_names[tasks],
            "worker": np.array([f"w{i:03d}" for i in range(N_WORKERS)], dtype=object)[workers],
            "label": np.array(LABELS, dtype=object)[given],
        }
    )
    # a model right 80% of the time, with a top probability between 0.4 and 1
    top = np.where(rng.random(N_ITEMS) < 0.8, truth, (truth + rng.integers(1, k, N_ITEMS)) % k)
    p_top = rng.uniform(0.4, 1.0, N_ITEMS)
    probs = np.repeat(((1 - p_top) / (k - 1))[:, None], k, axis=1)
    probs[np.arange(N_ITEMS), top] = p_top
    model = pd.DataFrame(probs, index=task_names, columns=LABELS)
    return frame, pd.Series(np.array(LABELS, dtype=object)[truth], index=task_names), model


SCALE_RUNS: dict[str, Callable[[pd.DataFrame, pd.DataFrame], pd.Series]] = {
    "ours majority_vote": lambda df, m: MajorityVote(labels=LABELS).fit_predict(df),
    "ours weighted_majority_vote": lambda df, m: WeightedMajorityVote(
        labels=LABELS, skills={f"w{i:03d}": 0.55 + 0.4 * ((i * 37) % 100) / 100 for i in range(N_WORKERS)}
    ).fit_predict(df),
    "ours dawid_skene": lambda df, m: DawidSkene(labels=LABELS).fit_predict(df),
    "ours dawid_skene (crowd-kit settings)": lambda df, m: DawidSkene(
        labels=LABELS, smoothing=0.0, diagonal_prior=0.0
    ).fit_predict(df),
    "ours dawid_skene fused": lambda df, m: DawidSkene(labels=LABELS, fuse_model=True).fit_predict(
        df, model_probas=m
    ),
    "ours glad": lambda df, m: GLAD(labels=LABELS).fit_predict(df),
    "ours mace": lambda df, m: MACE(labels=LABELS).fit_predict(df),
}


def _crowdkit(name: str) -> Callable[[pd.DataFrame, pd.DataFrame], pd.Series]:
    def run(df: pd.DataFrame, m: pd.DataFrame) -> pd.Series:
        import crowdkit.aggregation as ck

        quiet_crowdkit()
        cls = {
            "majority_vote": ck.MajorityVote,
            "dawid_skene": ck.DawidSkene,
            "glad": ck.GLAD,
            "mace": ck.MACE,
        }
        return cls[name]().fit_predict(df)

    return run


for _m in ["majority_vote", "dawid_skene", "glad", "mace"]:
    SCALE_RUNS[f"crowd-kit {_m}"] = _crowdkit(_m)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale_one(run: str) -> None:
    """Child process: generate, then time one aggregator; print one JSON line."""
    quiet_crowdkit()
    import crowdkit.aggregation  # noqa: F401  (imported before the baseline, for both sides alike)

    frame, truth, model = generate()
    base = _peak_mb()
    pred, secs = timed(lambda: SCALE_RUNS[run](frame, model))
    print(
        json.dumps(
            {
                "run": run,
                "seconds": secs,
                "peak_mb": _peak_mb(),
                "base_mb": base,
                "accuracy": acc(pred, truth),
                "answers": len(frame),
            }
        )
    )


def scale(timeout: float) -> str:
    lines = header("python benchmarks/aggregation.py scale --record")
    lines += [
        f"{N_ITEMS * PER_ITEM:,} generated answers: {N_ITEMS:,} items x {PER_ITEM} answers from "
        f"{N_WORKERS} workers (5 distinct workers per item), 4 labels, worker accuracy uniform in",
        "[0.55, 0.95], wrong answers uniform; for fusion a model right 80% of the time. Each run is a",
        "fresh process that generates the data, then fits one aggregator: *s* is the fit's wall time,",
        "*peak MB* the process's peak RSS (data, interpreter and libraries included) and *+MB* the peak",
        f"above what it had reached before the fit. Runs are limited to {timeout:.0f} s each.",
        "",
        "| aggregator | s | peak MB | +MB | accuracy vs truth |",
        "|---|--:|--:|--:|--:|",
    ]
    results = {}
    for run in SCALE_RUNS:
        try:
            out = subprocess.run(
                [sys.executable, __file__, "scale-one", run],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results[run] = result
            row = (
                f"| {run} | {result['seconds']:.1f} | {result['peak_mb']:.0f} | "
                f"{result['peak_mb'] - result['base_mb']:.0f} | {result['accuracy']:.4f} |"
            )
        except subprocess.TimeoutExpired:
            row = f"| {run} | > {timeout:.0f} (stopped) | — | — | — |"
        except subprocess.CalledProcessError as exc:
            row = f"| {run} | failed: {exc.stderr.strip().splitlines()[-1][:80]} | — | — | — |"
        lines.append(row)
        print(row, flush=True)
    pairs = [
        ("majority_vote", "ours majority_vote"),
        ("dawid_skene", "ours dawid_skene (crowd-kit settings)"),
        ("glad", "ours glad"),
        ("mace", "ours mace"),
    ]
    lines += [
        "",
        "| method | crowd-kit s / ours s | crowd-kit peak MB / ours | Δ accuracy points |",
        "|---|--:|--:|--:|",
    ]
    for method, ours in pairs:
        theirs = results.get(f"crowd-kit {method}")
        mine = results.get(ours)
        if theirs and mine:
            lines.append(
                f"| {method} | {theirs['seconds'] / mine['seconds']:.1f} | "
                f"{theirs['peak_mb'] / mine['peak_mb']:.2f} | "
                f"{100 * (mine['accuracy'] - theirs['accuracy']):+.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["crowds", "fusion", "scale", "scale-one"])
    parser.add_argument("run", nargs="?", help="(scale-one) which aggregator")
    parser.add_argument("--record", action="store_true", help="write the figures into docs/benchmarks.md")
    parser.add_argument("--timeout", type=float, default=900.0, help="(scale) seconds allowed per run")
    args = parser.parse_args()
    if args.part == "scale-one":
        scale_one(args.run)
        return
    text = {"crowds": crowds, "fusion": fusion, "scale": lambda: scale(args.timeout)}[args.part]()
    print(text)
    if args.record:
        titles = {
            "crowds": "Aggregation on real crowds vs gold and crowd-kit (benchmarks/aggregation.py crowds)",
            "fusion": "Model + human fusion (benchmarks/aggregation.py fusion)",
            "scale": "Aggregation at scale: 1,000,000 answers (benchmarks/aggregation.py scale)",
        }
        record_section(titles[args.part], text)


if __name__ == "__main__":
    main()
