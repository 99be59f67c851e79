"""The dataset-level guarantee (``routing.guarantee: dataset``) on real crowds: is it valid, and
how many people does it need compared with the accepted-items guarantee and with hindsight?

Over ``--splits`` random golden/test splits of amazon_isbook and medrel (the data sets with every
worker's recorded answers), with the default ``embedding`` labeler (temperature-calibrated, as in
benchmarks/routing.py):

- people's label on an item is the majority of 3 of its recorded answers drawn at random (ties
  broken at random), so people have their real error rate; on the golden items those answers play
  the control answers duolabel measures people with;
- the certificate is computed on the golden items; the delivered data set is the test items: the
  model's label where the threshold accepts, people's label elsewhere;
- validity: the share of splits without a false certificate (certified, yet the delivered test
  accuracy misses the target; must be at least 1 - risk); the human share against the best
  threshold in hindsight on the test items (the fewest people for which the delivered test
  accuracy reaches the target).

emotion has no recorded answers and is left out. The targets are fixed per data set before
looking at any split, below people alone's accuracy (a delivered set cannot be better than
people on the items they label).

    python benchmarks/dataset_guarantee.py --splits 500 [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from _record import record_section  # noqa: E402
from routing import load, predictions  # noqa: E402

from duolabel.core.guarantee import certify_dataset  # noqa: E402
from duolabel.core.operating import GRID, certify_target  # noqa: E402
from duolabel.labelers.embedding import MemoryEmbeddingCache  # noqa: E402

SETS = {"amazon_isbook": (100, 0.9), "medrel": (150, 0.7)}  # golden items, target
RISK = 0.1


def crowd_labels(rows, answers, labels, rng) -> np.ndarray:
    out = []
    for r in rows:
        given = answers.get(r["id"], [])
        picked = [given[i][1] for i in rng.permutation(len(given))[:3]]
        counts = {lab: picked.count(lab) for lab in set(picked)}
        top = max(counts.values()) if counts else 0
        winners = sorted(lab for lab, c in counts.items() if c == top)
        out.append(labels.index(winners[rng.integers(len(winners))]) if winners else -1)
    return np.array(out)


def delivered_accuracy(scores, right, people_right, threshold) -> float:
    return float(np.where(scores >= threshold, right, people_right).mean())


def hindsight_share(scores, right, people_right, target) -> float:
    order = np.argsort(-scores, kind="stable")
    cum_model = np.concatenate([[0.0], np.cumsum(right[order])])
    cum_people = np.concatenate([[0.0], np.cumsum(people_right[order])])
    n = len(scores)
    ok = [k for k in range(n + 1) if (cum_model[k] + cum_people[-1] - cum_people[k]) / n >= target]
    return 1 - max(ok) / n if ok else 1.0


def run(name: str, n_golden: int, target: float, splits: int) -> dict[str, float]:
    rows, labels, answers = load(name)
    rows = [r for r in rows if answers.get(r["id"])]
    cache = MemoryEmbeddingCache()
    t = {k: [] for k in ("met", "met_acc", "certified", "share", "share_acc", "gap", "people", "model")}
    for split in range(splits):
        rng = np.random.default_rng(split)
        order = rng.permutation(len(rows))
        golden, test = order[:n_golden], order[n_golden:]
        g_probs, g_gold, t_probs, t_gold = predictions(rows, labels, golden, test, cache)
        crowd = crowd_labels(rows, answers, labels, rng)
        g_people = (crowd[golden] == g_gold).astype(float)
        t_people = (crowd[test] == t_gold).astype(float)
        g_scores, g_right = g_probs.max(axis=1), g_probs.argmax(axis=1) == g_gold
        t_scores, t_right = t_probs.max(axis=1), (t_probs.argmax(axis=1) == t_gold).astype(float)
        cert = certify_dataset(g_scores, g_right, g_people, target=target, risk=RISK, thresholds=GRID)
        accepted_cert = certify_target(g_scores, g_right, target=target, risk=RISK)
        share = float((t_scores < cert.threshold).mean())
        # A false certificate: certified, and the delivered test items miss the target. Without
        # a certificate nothing is claimed (status says it cannot be certified).
        delivered = delivered_accuracy(t_scores, t_right, t_people, cert.threshold)
        t["met"].append(not cert.certified or delivered >= target)
        t["met_acc"].append(
            delivered_accuracy(t_scores, t_right, t_people, accepted_cert.threshold) >= target
        )
        t["certified"].append(cert.certified)
        t["share"].append(share)
        t["share_acc"].append(float((t_scores < accepted_cert.threshold).mean()))
        t["gap"].append(share - hindsight_share(t_scores, t_right, t_people, target))
        t["people"].append(float(t_people.mean()))
        t["model"].append(float(t_right.mean()))
    return {k: float(np.mean(v)) for k, v in t.items()} | {
        "gap_median": float(np.median(t["gap"])),
        "share_std": float(np.std(t["share"])),
        "golden": n_golden,
        "target": target,
        "test": len(rows) - n_golden,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=500)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    lines = [
        "| data set (golden, test) | target | people alone | model alone | splits meeting the target: "
        "dataset guarantee (certified) | human share (± std) | median gap to hindsight | "
        "accepted-items guarantee: meeting the dataset target, human share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, (n_golden, target) in SETS.items():
        r = run(name, n_golden, target, args.splits)
        lines.append(
            f"| {name} ({r['golden']}, {r['test']}) | {target} | {r['people']:.3f} | {r['model']:.3f} | "
            f"{r['met']:.3f} ({r['certified']:.0%}) | {r['share']:.1%} ± {r['share_std']:.1%} | "
            f"{r['gap_median']:+.1%} | {r['met_acc']:.3f}, {r['share_acc']:.1%} |"
        )
        print(lines[-1], flush=True)
    body = (
        f"Command: `python benchmarks/dataset_guarantee.py --splits {args.splits} --record` "
        f"({time.perf_counter() - started:.0f} s). Risk {RISK}: a valid guarantee meets the target in "
        f"at least {1 - RISK:.0%} of the splits. People: majority of 3 recorded answers drawn per "
        "split; embedding labeler, temperature calibration; means over splits.\n\n"
        + "\n".join(lines)
        + "\n\nThe PAC Labels comparison (certifying without golden items from a sample people label) "
        "is benchmarks/pac_compare.py's section."
    )
    print(body)
    if args.record:
        record_section("Dataset-level guarantee: validity and human share", body)


if __name__ == "__main__":
    main()
