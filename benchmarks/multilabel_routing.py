"""Multi-label routing on GoEmotions: model alone, people alone, the hybrid at a target, and
whether the target guarantee holds. Run through ``python benchmarks/multilabel.py --routing``.

For each seed the 3,001 comments are split in half at random: the first half is the golden set
(gold known), the second the items to label. The model is the frozen MiniLM encoder with one
logistic-regression head per label; the golden items get cross-fitted (5-fold) probabilities,
each label is calibrated on them (temperature, ``PerLabelCalibrator`` as ``duolabel calibrate``
does) and the items to label get the heads and calibrators fitted on the whole golden half.
An item's routing score is its whole list's chance of being entirely right, scored two ways:
the per-label product (``MultiLabel.routing_probs``, labels taken as independent) and that
product calibrated on the golden half against "the list equals gold"
(``core.wholelist.WholeListCalibrator``, cross-fitted there, as ``duolabel calibrate`` does, and
what routing reads); the target mode certifies on the golden items the lowest
threshold at which the accepted lists are entirely right (subset accuracy) at least
``TARGET`` of the time with probability ``1 - RISK``. Items below it get people's answer: the
raters' answers aggregated by majority vote per label (most comments have one rater).

Figures: subset accuracy (the whole list equals gold) and micro-F1 over the items to label.
Validity: the calibrated probabilities cross-fitted over all comments (cached under
/work/bench) are split ``--splits`` times into a golden half and a test half; each split
certifies a threshold on its golden half and checks the accepted test lists' subset accuracy
(the check of ``benchmarks/routing.py`` for single labels). That check is stricter than the
promise, which is about the population: with a test half as large as the golden half and the
certified point just above the target, the test half falls below it by chance more often than
the risk. So each split also draws a golden half from all comments with replacement, taking
them as the population, and checks the accepted comments of the whole population
(:func:`population_held`): the promise itself, on a population whose accuracy is known.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from _record import record_section
from multilabel import load, micro_f1, vectors
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from duolabel.core.multilabel import BinaryRelevance, LabelThresholds, OneVsRestHead, PerLabelCalibrator
from duolabel.core.operating import certify_target, choose_operating_point
from duolabel.core.tasks import MultiLabel
from duolabel.core.wholelist import WholeListCalibrator

TARGETS = (0.7, 0.8)
RISK = 0.1
OOF_CACHE = Path("/work/bench/goemotions_ml_calibrated_oof.npy")
KIND = MultiLabel()
# (row tag, tuned thresholds?, whole-list chance calibrated on the golden items?); product: the
# per-label product as routing scored lists before the whole-list calibration.
SCORINGS = (
    ("0.5, product", False, False),
    ("0.5, whole-list calibrated", False, True),
    ("tuned, product", True, False),
    ("tuned, whole-list calibrated", True, True),
)
# Read off the recorded run (the figures are deterministic given the seeds and splits).
NOTES = (
    "With all 28 labels the model's whole list is right on under a tenth of the comments and its "
    "chance of being right never reaches 0.5, so no target is certified and every comment goes to "
    "people: the hybrid is people alone, however the chance is scored. The per-label product is too "
    "high for lists of no label: every GoEmotions comment has at least one gold label, so `[]` is "
    "always wrong, yet the product of 28 calibrated 'no's makes it about 0.3; the whole-list "
    "calibration (`duolabel calibrate` fits it on the golden items: cross-fitted isotonic on 'the "
    "stored list equals gold', empty and non-empty lists apart) gives `[]` its measured rate "
    "instead. With the six labels (most comments have none of them, so `[]` is often right) the "
    "target 0.7 is certified: about a third of the comments go to people and the hybrid's subset "
    "accuracy lands between the model's and people's. Tuned per-label thresholds raise the model's "
    "micro-F1 but lower its subset accuracy, so the hybrid sends more to people. The guarantee at "
    "0.7 on six labels, product versus whole-list calibrated: the accepted lists of the population "
    "reach the target in 91.5% versus 94.5% of the 200 draws (promised 90%), for a human share of "
    "0.297 versus 0.319. The accepted test lists reach it in only 81.0% versus 86.0% of the splits: "
    "that check (the one `benchmarks/routing.py` makes for single labels, where 150-300 golden "
    "items leave a wide margin above the target and the test sets are 1.5-9 times larger) is "
    "stricter than the promise here, since the certified points sit just above the target (mean "
    "accepted accuracy 0.72-0.73) and a test half as large as the "
    "golden half falls below it by chance; a perfectly calibrated synthetic model with 1,500 "
    "golden items at 0.7 shows the same gap, 92% in the population versus 84% in a test half "
    "(tests/test_certify_near_target.py). The column before this one counted all comments, the "
    "golden half that chose the threshold included (97.5% versus 99.0%), and overstated it. At 0.8 "
    "the calibrated chance holds in 100% of draws (product 99.0%; test halves 99.0% and 93.5%) but "
    "accepts less (human share 0.958 versus 0.888). People's figures are optimistic: gold was built "
    "from these raters' "
    "votes."
)


def _head() -> LogisticRegression:
    return LogisticRegression(C=1.0, max_iter=2000)


def cross_fitted(X: np.ndarray, Y: np.ndarray, seed: int) -> np.ndarray:
    """Per-label probabilities of every row from heads that never saw it (5 folds)."""
    out = np.zeros(Y.shape, dtype=float)
    for train, test in KFold(5, shuffle=True, random_state=seed).split(X):
        out[test] = OneVsRestHead(_head).fit(X[train], Y[train]).predict_proba(X[test])
    return out


def answers_of(items: list[dict], labels: list[str]) -> list[str]:
    return [KIND.check_answer(r["gold"], labels) for r in items]


def people(raters: list[dict], labels: list[str]) -> dict[str, str]:
    """Each comment's raters' answers, majority vote per label (ties: no)."""
    frame = pd.DataFrame(
        [(a["item_id"], a["annotator"], KIND.check_answer(a["label"], labels)) for a in raters],
        columns=["task", "worker", "label"],
    )
    return dict(BinaryRelevance("majority_vote", labels=labels).fit(frame).labels_.items())


def scores(
    probs: np.ndarray, labels: list[str], limits: list[float] | None = None
) -> tuple[list[str], np.ndarray]:
    kind = MultiLabel(thresholds=limits)
    answers = [kind.model_answer(row, labels) for row in probs]
    return answers, kind.routing_probs(probs, answers, labels)[:, 0]


def whole_list(
    g_answers: list[str], g_scores: np.ndarray, g_gold: list[str], t_answers: list[str], t_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The whole-list chance calibrated on the golden items (``duolabel calibrate`` does the
    same): the golden items' cross-fitted, the others' from the calibrator fitted on all golden."""
    empty = lambda answers: np.array([a == "[]" for a in answers])  # noqa: E731
    right = np.array([a == g for a, g in zip(g_answers, g_gold, strict=True)], dtype=int)
    calibrator = WholeListCalibrator().fit(g_scores, right, empty(g_answers))
    return (
        calibrator.cross_validated(g_scores, right, empty(g_answers)),
        calibrator.transform(t_scores, empty(t_answers)),
    )


def one_seed(
    X: np.ndarray, Y: np.ndarray, gold: list[str], human: list[str], labels: list[str], seed: int
) -> dict:
    n = len(gold)
    order = np.random.default_rng(seed).permutation(n)
    golden, test = np.sort(order[: n // 2]), np.sort(order[n // 2 :])
    oof = cross_fitted(X[golden], Y[golden], seed)
    calibrator = PerLabelCalibrator("temperature").fit(oof, Y[golden])
    honest = calibrator.cross_validated(oof, Y[golden])
    probs = calibrator.transform(OneVsRestHead(_head).fit(X[golden], Y[golden]).predict_proba(X[test]))
    limits = LabelThresholds().fit(honest, Y[golden]).thresholds_.tolist()
    g_gold, t_gold = [gold[i] for i in golden], [gold[i] for i in test]
    t_human = [human[i] for i in test]
    human_right = np.array([human[i] == gold[i] for i in golden], dtype=float)
    out: dict = {}
    for tag, chosen, calibrated in SCORINGS:
        g_answers, g_scores = scores(honest, labels, limits if chosen else None)
        t_answers, t_scores = scores(probs, labels, limits if chosen else None)
        if calibrated:
            g_scores, t_scores = whole_list(g_answers, g_scores, g_gold, t_answers, t_scores)
        right = np.array([a == g for a, g in zip(t_answers, t_gold, strict=True)])
        lists = lambda values: [json.loads(v) for v in values]  # noqa: E731
        if not calibrated:  # the model's lists do not depend on how their chance is scored
            f1 = micro_f1(lists(t_answers), lists(t_gold))
            out[f"model alone ({tag.split(',')[0]})"] = (right.mean(), f1)
        for target in TARGETS:
            point = choose_operating_point(
                "target", g_scores, np.array([a == g for a, g in zip(g_answers, g_gold, strict=True)]),
                human_right, routed_cost=1.0, target=target, risk=RISK,
            )  # fmt: skip
            accept = t_scores >= point.threshold
            final = [a if ok else h for a, h, ok in zip(t_answers, t_human, accept, strict=True)]
            hybrid_right = np.array([f == g for f, g in zip(final, t_gold, strict=True)])
            out[f"hybrid, target {target:g} ({tag})"] = (
                hybrid_right.mean(), micro_f1(lists(final), lists(t_gold)), 1.0 - accept.mean(),
                right[accept].mean() if accept.any() else float("nan"),
            )  # fmt: skip
    people_right = np.array([h == g for h, g in zip(t_human, t_gold, strict=True)])
    out["people alone (majority vote per label)"] = (
        people_right.mean(),
        micro_f1([json.loads(v) for v in t_human], [json.loads(v) for v in t_gold]),
    )
    return out


def all_calibrated(X: np.ndarray, Y: np.ndarray, cache: Path) -> np.ndarray:
    """Every comment's calibrated probabilities, cross-fitted twice (heads, then calibrators)."""
    if cache.exists():
        cached = np.load(cache)
        if cached.shape == Y.shape:
            return cached
    oof = cross_fitted(X, Y, seed=0)
    calibrated = PerLabelCalibrator("temperature").fit(oof, Y).cross_validated(oof, Y)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, calibrated)
    return calibrated


def population_held(
    answers: list[str],
    product: np.ndarray,
    gold: list[str],
    right: np.ndarray,
    target: float,
    whole: bool,
    draw: int,
) -> bool:
    """Whether the certificate holds on a population whose accuracy is known exactly.

    What target mode promises is the accepted items' accuracy in the population the golden items
    come from, not in one finite test half: a test half as large as the golden half falls below
    a point certified just above the target far more often than ``RISK`` by chance alone. Here
    the 3,001 comments are the population: a golden half is drawn from them with replacement
    (i.i.d., as the certificate assumes), certifies a threshold (its whole-list chance
    cross-fitted on it, every comment's from the calibrator fitted on all of it, as
    ``duolabel calibrate`` does), and the accepted comments of the whole population are counted.
    """
    n = len(gold)
    golden = np.random.default_rng(50_000 + draw).integers(0, n, n // 2)
    g_chance, chance = product[golden], product
    if whole:
        g_gold = [gold[i] for i in golden]
        g_chance, chance = whole_list([answers[i] for i in golden], g_chance, g_gold, answers, product)
    cert = certify_target(g_chance, right[golden], target=target, risk=RISK)
    accepted = chance >= cert.threshold
    return bool(right[accepted].mean() >= target) if accepted.any() else True


def validity(
    X: np.ndarray,
    Y: np.ndarray,
    gold: list[str],
    human: list[str],
    labels: list[str],
    splits: int,
    *,
    cache: Path,
) -> dict:
    calibrated = all_calibrated(X, Y, cache)
    answers, product = scores(calibrated, labels)
    right = np.array([a == g for a, g in zip(answers, gold, strict=True)])
    human_right = np.array([h == g for h, g in zip(human, gold, strict=True)], dtype=float)
    n = len(gold)
    out = {}
    for target, whole in [(t, w) for t in TARGETS for w in (False, True)]:
        held, pooled, shares, accuracies = [], [], [], []
        for split in range(splits):
            order = np.random.default_rng(10_000 + split).permutation(n)
            golden, test = order[: n // 2], order[n // 2 :]
            chance = product
            if whole:  # calibrated on this split's golden half only (cross-fitted there)
                g_answers = [answers[i] for i in golden]
                rest = np.setdiff1d(np.arange(n), golden)
                chance = np.empty(n)
                chance[golden], chance[rest] = whole_list(
                    g_answers, product[golden], [gold[i] for i in golden],
                    [answers[i] for i in rest], product[rest],
                )  # fmt: skip
            point = choose_operating_point(
                "target", chance[golden], right[golden], human_right[golden], routed_cost=1.0,
                target=target, risk=RISK,
            )  # fmt: skip
            accept = chance[test] >= point.threshold
            shares.append(1.0 - accept.mean())
            pooled.append(population_held(answers, product, gold, right, target, whole, split))
            if accept.any():
                accuracies.append(right[test][accept].mean())
                held.append(right[test][accept].mean() >= target)
            else:
                held.append(True)  # nothing accepted: the promise is kept vacuously
        out[(target, whole)] = (
            np.mean(held), np.mean(pooled), np.mean(shares), np.array(accuracies), len(accuracies)
        )  # fmt: skip
    return out


def _fmt(values: list[float]) -> str:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return "—"
    return f"{v.mean():.3f} ± {v.std():.3f} ({v.min():.3f}–{v.max():.3f})"


def label_sets(items: list[dict], labels: list[str]) -> list[tuple[str, list[str]]]:
    """All 28 labels, and a smaller project: the six most frequent labels other than neutral
    (a rule fixed before looking at any routing figure; comments with none of them answer [])."""
    freq = pd.Series([g for r in items for g in r["gold"] if g != "neutral"]).value_counts()
    few = [label for label in labels if label in set(freq.index[:6])]
    return [("all 28 labels", labels), (f"6 labels ({', '.join(few)})", few)]


def restricted(items: list[dict], raters: list[dict], keep: list[str]) -> tuple[list[dict], list[dict]]:
    cut = lambda values: [v for v in values if v in keep]  # noqa: E731
    return (
        [{**r, "gold": cut(r["gold"])} for r in items],
        [{**a, "label": cut(a["label"])} for a in raters],
    )


def report(seeds: int, splits: int, *, record: bool) -> None:
    all_items, all_raters, all_labels = load()
    X = vectors(all_items)
    lines = [
        f"Command: `python benchmarks/multilabel.py --routing --record` — {date.today().isoformat()}, "
        f"{seeds} random halves of `goemotions` (3,001 comments): the golden half trains and "
        "calibrates the model and certifies the threshold, the other half is labelled. Mean ± "
        f"std (min–max) over seeds. Target mode at risk {RISK:g}: the accepted lists entirely right "
        "(subset accuracy) at least the target, on the whole list's chance of being right. (0.5): "
        "every label at 0.5; (tuned): `calibration.label_thresholds: tuned`. People: the recorded "
        "raters' answers, majority vote per label (one rater on all but 124 comments).",
    ]
    for title, labels in label_sets(all_items, all_labels):
        items, raters = restricted(all_items, all_raters, labels)
        Y = np.array([[int(label in r["gold"]) for label in labels] for r in items])
        gold = answers_of(items, labels)
        by_id = people(raters, labels)
        human = [by_id.get(r["id"], "[]") for r in items]
        rows: dict[str, list[tuple]] = {}
        for seed in range(seeds):
            for name, figures in one_seed(X, Y, gold, human, labels, seed).items():
                rows.setdefault(name, []).append(figures)
            print(f"{title}: seed {seed} done", flush=True)
        lines += [
            "",
            f"**{title}**",
            "",
            "| labeller | subset accuracy | micro-F1 | human share | accepted lists right |",
            "|---|---|---|---|---|",
        ]
        for name, values in rows.items():
            cols = list(zip(*values, strict=True))
            share = _fmt(cols[2]) if len(cols) > 2 else ("0" if name.startswith("model") else "1")
            accepted = _fmt(cols[3]) if len(cols) > 3 else "—"
            lines.append(f"| {name} | {_fmt(cols[0])} | {_fmt(cols[1])} | {share} | {accepted} |")
        checked = validity(
            X, Y, gold, human, labels, splits, cache=OOF_CACHE.with_suffix(f".{len(labels)}.npy")
        )
        lines += [
            "",
            f"The guarantee over {splits} golden/test halves ({title}; calibrated probabilities "
            "cross-fitted once over all comments and reused, each split certifying on its golden half):",
            "",
            "| target, score | splits where the accepted test lists reach it | ... the accepted lists of the "
            "population (golden half drawn from all comments) | human share | accepted test lists right |",
            "|---|---|---|---|---|",
        ]
        for (target, whole), (held, pooled, share, accuracies, n_acc) in checked.items():
            accepted = f"{_fmt(accuracies)} ({n_acc} splits accept some)" if n_acc else "none accepted"
            # The promise is about the population; the finite test half is a stricter check.
            promised = f"{pooled:.1%} (promised ≥ {1 - RISK:.0%})"
            scored = "whole-list calibrated" if whole else "product"
            lines.append(f"| {target:g}, {scored} | {held:.1%} | {promised} | {share:.3f} | {accepted} |")
    text = "\n".join([*lines, "", NOTES])
    print(text)
    if record:
        record_section(
            "Multi-label routing: GoEmotions, hybrid at a target (benchmarks/multilabel.py --routing)", text
        )
