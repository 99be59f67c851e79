"""Spans through the hybrid loop on CoNLL-2003 with Mechanical Turk answers: the span tagger,
people (recorded answers, token vote), and the two routed at a target accuracy.

    python benchmarks/spans_hybrid.py [--record] [--seeds 5] [--golden 400] [--target 0.7 0.8 0.9]
        [--splits 40]

Per seed the sentences are shuffled; the first ``--golden`` are golden (the tagger learns from
their gold spans and calibrates on its cross-fitted predictions of them, as a spans project does:
``labelers/span_labeler.py``, ``stages/calibrate.py``), the others with crowd answers are the
work. Figures on the work: exact-match span F1 (micro over spans) and whole-item accuracy (the
item's span list equals gold, what routing certifies) of

- the model alone (every item takes the tagger's spans);
- people alone: the token vote of three recorded answers drawn at random per sentence (what
  routing each sentence to three people gets);
- hybrid: the item score calibrated on the golden items, the routing threshold certified by
  ``certify_target`` (target accuracy of accepted items, each of ``--target``, at risk 0.1), accepted items
  keep the model's spans and the others take the vote of three: human share, accuracy of the
  accepted items, final span F1 and whole-item accuracy.

Validity of the target guarantee: per seed the tagger trained on the golden sentences is kept, and
the work sentences are split ``--splits`` times at random into a calibration set of ``--golden``
sentences (calibrator and certificate) and the rest (accepted accuracy measured); the guarantee
holds on a split when the accepted items' accuracy reaches the target (or none is accepted). It
should hold on at least 90% of the seeds x splits. Word vectors come from the cache of
``benchmarks/spans.py`` under /work/bench.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import record_section
from spans import load, prf, vote, word_vectors

from duolabel.core.multilabel import PerLabelCalibrator
from duolabel.core.operating import certify_target
from duolabel.core.spans import Span
from duolabel.labelers.span_tagger import SpanTagger

RISK = 0.1


def _whole(predicted: dict[str, list[Span]], gold: dict[str, list[Span]]) -> float:
    return float(np.mean([set(predicted.get(t, [])) == set(g) for t, g in gold.items()]))


def _cross_fitted(words: list, gold: list[list[Span]], folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Golden items' out-of-fold item scores and whether their whole list was right."""
    fold = np.random.default_rng(0).permutation(len(words)) % folds
    score, right = np.zeros(len(words)), np.zeros(len(words), dtype=bool)
    for k in range(folds):
        rest, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        tagger = SpanTagger().fit_words([words[i] for i in rest], [gold[i] for i in rest])
        for i, p in zip(held, tagger.predict_words([words[i] for i in held]), strict=True):
            score[i], right[i] = p.confidence, set(p.spans) == set(gold[i])
    return score, right


def _threshold(score: np.ndarray, right: np.ndarray, target: float) -> tuple[PerLabelCalibrator, float]:
    cal = PerLabelCalibrator("temperature").fit(score[:, None], right[:, None].astype(int))
    honest = cal.cross_validated(score[:, None], right[:, None].astype(int))[:, 0]
    return cal, certify_target(honest, right, target=target, risk=RISK).threshold


def run(seeds: int, golden: int, targets: list[float], splits: int) -> dict[str, list[float]]:
    items, answers, labels = load()
    texts = {item["id"]: item["text"] for item in items}
    vectors = word_vectors(items)
    gold_all = [item["gold_spans"] for item in items]
    out: dict[str, list[float]] = {}

    def put(name: str, value: float) -> None:
        out.setdefault(name, []).append(value)

    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(items))
        train = [int(i) for i in order[:golden]]
        work = [int(i) for i in order[golden:] if items[i]["id"] in answers]
        ids = [items[i]["id"] for i in work]
        gold = {items[i]["id"]: gold_all[i] for i in work}
        words = [vectors[i] for i in train]
        tagger = SpanTagger().fit_words(words, [gold_all[i] for i in train])
        found = tagger.predict_words([vectors[i] for i in work])
        model = {t: p.spans for t, p in zip(ids, found, strict=True)}
        score = np.array([p.confidence for p in found])
        right = np.array([set(model[t]) == set(gold[t]) for t in ids])
        three = {
            t: [
                answers[t][j]
                for j in sorted(rng.choice(len(answers[t]), size=min(3, len(answers[t])), replace=False))
            ]
            for t in ids
        }
        people = vote(three, texts, labels)
        put("model alone: span F1", prf(model, gold)[2])
        put("model alone: whole-item accuracy", _whole(model, gold))
        put("people alone (vote of 3): span F1", prf(people, gold)[2])
        put("people alone (vote of 3): whole-item accuracy", _whole(people, gold))
        oof = _cross_fitted(words, [gold_all[i] for i in train])
        splits_of = [rng.permutation(len(work)) for _ in range(splits)]
        for target in targets:
            cal, threshold = _threshold(*oof, target)
            accepted = cal.transform(score[:, None])[:, 0] >= threshold
            final = {t: (model[t] if a else people[t]) for t, a in zip(ids, accepted, strict=True)}
            at = f"hybrid at target {target}"
            put(f"{at}: human share", 1.0 - accepted.mean())
            put(f"{at}: accuracy of accepted items", right[accepted].mean() if accepted.any() else np.nan)
            put(f"{at}: span F1", prf(final, gold)[2])
            put(f"{at}: whole-item accuracy", _whole(final, gold))
            for shuffled in splits_of:  # validity: the same model, fresh calibration / test splits
                c, t = shuffled[:golden], shuffled[golden:]
                cal, threshold = _threshold(score[c], right[c], target)
                ok = cal.transform(score[t][:, None])[:, 0] >= threshold
                put(
                    f"validity at target {target}: guarantee held",
                    float(not ok.any() or right[t][ok].mean() >= target),
                )
                put(f"validity at target {target}: human share", 1.0 - ok.mean())
    return out


def _cell(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return "—"
    return f"{v.mean():.3f} ± {v.std():.3f} ({v.min():.3f}–{v.max():.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the figures into docs/benchmarks.md")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--golden", type=int, default=400)
    parser.add_argument("--target", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    parser.add_argument("--splits", type=int, default=40, help="validity splits per seed")
    args = parser.parse_args()
    figures = run(args.seeds, args.golden, args.target, args.splits)
    held = {t: figures[f"validity at target {t}: guarantee held"] for t in args.target}
    n_splits = len(held[args.target[0]])
    lines = [
        f"Command: `python benchmarks/spans_hybrid.py --record` — {date.today().isoformat()}, {args.seeds} "
        f"seeds; `conll2003_mturk`, {args.golden} random golden sentences per seed (the tagger's "
        "training and calibration set, cross-fitted), the other sentences with crowd answers are the work. "
        f"Targets: accepted items' whole-item accuracy {', '.join(map(str, args.target))} at risk {RISK}. "
        f"Mean ± std (min–max) over seeds; validity over {n_splits} calibration/test splits "
        f"({args.splits} per seed).",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {name} | {_cell(v)} |" for name, v in figures.items()),
        "",
        "The guarantee held on "
        + ", ".join(f"{np.mean(v):.1%} (target {t})" for t, v in held.items())
        + f" of {n_splits} splits (it promises at least {1 - RISK:.0%}). "
        "Whole-item accuracy is strict: a sentence counts only when every span "
        "(start, end, label) matches and nothing is missed. "
        '"Accuracy of accepted items" is over the seeds that accepted any.',
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section("Spans: the hybrid loop on CoNLL-2003 (benchmarks/spans_hybrid.py)", text)


if __name__ == "__main__":
    main()
