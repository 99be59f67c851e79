"""Routing: simulated hybrid cost and quality on real crowds, and the validity of the
target-mode guarantee.

    python benchmarks/routing.py [--record] [--draws 10] [--splits 200]
    python benchmarks/routing.py --labeler finetune --golden 100 [--record]   # amazon_isbook only

1. Simulation (``duolabel.simulate``) with the ``embedding`` labeler on ``amazon_isbook``
   (150 golden items), ``medrel`` (150) and ``politifact_truth`` (60 of its 120 statements;
   the two control statements are left out), averaged over ``--draws`` random golden draws.
   People are answered from the recorded crowd answers with overlap 5, so "people alone"
   is the crowd's majority vote over (almost) every recorded answer. Routed items get the
   fused label (model prior + answers weighted by each worker's golden-item accuracy), and
   for comparison the plain majority vote; the dynamic policy runs without experts. Targets, on
   amazon_isbook: the cost-mode hybrid reaches at least the crowd's majority-vote accuracy at
   <= 25% of the humans-only labour cost, and the best-quality point reaches >= crowd
   majority vote + 1 point.
2. Guarantee validity: over ``--splits`` random golden/test splits, how often the accuracy of
   the accepted test items reaches the target (must be >= 1 - risk), and how far the chosen
   point is from the best threshold in hindsight (the lowest threshold whose accepted test
   items reach the target).

Golden probabilities are out-of-fold and cross-validated-calibrated (temperature); the test
items are labelled by the head trained on all golden items and calibrated on its out-of-fold
probabilities, as ``duolabel run`` does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))

from _record import record_section  # noqa: E402

from duolabel.config import CostsConfig  # noqa: E402
from duolabel.core.calibration import CALIBRATORS, cross_validated  # noqa: E402
from duolabel.core.evidence import majority_label  # noqa: E402
from duolabel.core.ltt import binomial_pvalue  # noqa: E402
from duolabel.core.operating import certify_target, hindsight_human_share  # noqa: E402
from duolabel.labelers import EmbeddingLabeler, TextItem  # noqa: E402
from duolabel.labelers.embedding import MemoryEmbeddingCache  # noqa: E402
from duolabel.simulate import SimulationInput, simulate  # noqa: E402

METHOD = "temperature"
COSTS = CostsConfig()  # 0.05 per answer + 20% fee; experts 1.0


def load(name: str) -> tuple[list[dict], list[str], dict[str, list[tuple[str, str]]]]:
    rows = [json.loads(line) for line in (DATA / name / "items.jsonl").open(encoding="utf-8")]
    labels = json.loads((DATA / name / "labels.json").read_text(encoding="utf-8"))["labels"]
    answers: dict[str, list[tuple[str, str]]] = {}
    path = DATA / name / "annotations.jsonl"
    if path.exists():
        for line in path.open(encoding="utf-8"):
            a = json.loads(line)
            answers.setdefault(a["item_id"], []).append((a["annotator"], a["label"]))
    rows = [r for r in rows if not r.get("control")]
    return rows, labels, answers


#: The labeler every draw trains (``--labeler``): ``embedding`` or a fine-tuned one.
LABELER = "embedding"


def make_labeler(labels: list[str], cache: MemoryEmbeddingCache, seed: int) -> object:
    """An unfitted labeler of kind ``LABELER`` with the embedded defaults of its settings."""
    if LABELER == "embedding":
        return EmbeddingLabeler(labels=labels, cache=cache)
    from duolabel.labelers.finetune import FineTuneLabeler, SetFitLabeler

    kind = {"finetune": FineTuneLabeler, "setfit": SetFitLabeler}[LABELER]
    return kind(labels=labels, random_state=seed)


def predictions(
    rows: list[dict],
    labels: list[str],
    golden: np.ndarray,
    test: np.ndarray,
    cache: MemoryEmbeddingCache,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cross-fitted calibrated golden probabilities, calibrated test probabilities, gold."""
    items = [TextItem(r["id"], r["text"], r["id"]) for r in rows]
    y = np.array([labels.index(r["gold"]) for r in rows])
    labeler = make_labeler(labels, cache, seed).fit(
        [items[i] for i in golden], [rows[i]["gold"] for i in golden]
    )
    oof = labeler.oof_proba_
    if np.isnan(oof).any():  # a held-out calibration fold: most golden rows have no honest score
        raise SystemExit(
            f"{LABELER} held out a calibration fold on {len(golden)} golden items (more than its "
            f"cross_fit_max_items), so only {int((~np.isnan(oof).any(axis=1)).sum())} of them have "
            "out-of-sample probabilities; this simulation needs every golden item cross-fitted"
        )
    honest = cross_validated(METHOD, oof, y[golden])
    raw, _ = labeler.predict_proba([items[i] for i in test])
    test_probs = CALIBRATORS.get(METHOD)().fit(oof, y[golden]).transform(raw)
    return honest, y[golden], test_probs, y[test]


def simulation(name: str, n_golden: int, draws: int) -> dict[str, object]:
    rows, labels, recorded = load(name)
    rows = [r for r in rows if recorded.get(r["id"])]
    index = {label: i for i, label in enumerate(labels)}
    cache = MemoryEmbeddingCache()
    per_point: dict[tuple[str, str], list[tuple[float, float]]] = {}
    crowd, model, people, oracle = [], [], [], []
    ran_out = 0
    for draw in range(draws):
        order = np.random.default_rng(1000 + draw).permutation(len(rows))
        golden, test = order[:n_golden], order[n_golden:]
        g_probs, g_gold, t_probs, t_gold = predictions(rows, labels, golden, test, cache, draw)
        if LABELER != "embedding":  # the routing features still use the frozen encoder's vectors
            EmbeddingLabeler(labels=labels, cache=cache).encode(
                [TextItem(r["id"], r["text"], r["id"]) for r in rows]
            )

        def answers(idx: np.ndarray) -> list[list[tuple[str, int]]]:
            return [[(w, index[lab]) for w, lab in recorded[rows[i]["id"]]] for i in idx]

        vectors = np.stack([cache.get([TextItem(r["id"], r["text"], r["id"])])[r["id"]] for r in rows])
        golden_right = (g_probs.argmax(axis=1) == g_gold).astype(float)

        def features(idx, *, exclude_self, vectors=vectors, golden=golden, golden_right=golden_right):
            sims = vectors[idx] @ vectors[golden].T
            if exclude_self:
                np.fill_diagonal(sims, -np.inf)
            nearest = np.argsort(-sims, axis=1)[:, :10]
            return {
                "log_length": np.log1p([len(rows[i]["text"]) for i in idx]),
                "neighbourhood_accuracy": golden_right[nearest].mean(axis=1),
            }

        data = SimulationInput(
            labels,
            g_probs,
            g_gold,
            answers(golden),
            t_probs,
            t_gold,
            answers(test),
            features(golden, exclude_self=True),
            features(test, exclude_self=False),
        )
        common = dict(costs=COSTS, overlap=5, max_overlap=5, targets=(0.9, 0.95), escalate=False, seed=draw)
        result = simulate(data, **common)
        majority = simulate(data, **common, policies=("threshold",), aggregate="majority")
        for row in majority.rows:
            per_point.setdefault(("threshold, majority vote", row.point), []).append(
                (row.hybrid_accuracy, row.cost_reduction)
            )
        crowd.append(result.crowd_accuracy)
        crowd_labels = [
            majority_label([(w, index[lab]) for w, lab in recorded[rows[i]["id"]]], p)
            for i, p in zip(test, t_probs, strict=True)
        ]
        oracle.append(float(((t_probs.argmax(axis=1) == t_gold) | (np.array(crowd_labels) == t_gold)).mean()))
        model.append(result.rows[0].model_accuracy)
        people.append(result.rows[0].human_accuracy)
        for row in result.rows:
            per_point.setdefault((row.policy, row.point), []).append(
                (row.hybrid_accuracy, row.cost_reduction)
            )
            ran_out += row.ran_out
    return {
        "name": name,
        "golden": n_golden,
        "test": len(rows) - n_golden,
        "crowd": float(np.mean(crowd)),
        "model": float(np.mean(model)),
        "people": float(np.mean(people)),
        "oracle": float(np.mean(oracle)),
        "model_draws": model,
        "crowd_draws": crowd,
        "points": {
            k: (float(np.mean([a for a, _ in v])), float(np.mean([c for _, c in v])), v)
            for k, v in per_point.items()
        },
        "ran_out": ran_out,
    }


# The default first; the start-at-half one before it; the start the scores expect to pay most.
# planned-start-randomized: its shared uniform per split from a generator of its own (as in
# routing_waste.py), independent of the split's data.
PROCEDURES = ("fallback", "fixed-sequence", "expected-start", "planned-start", "planned-start-randomized")
# A reference, not a valid procedure: the largest golden slice that passes its own binomial test
# at the whole risk, picked knowing every test's outcome. No procedure built on these tests
# accepts more, so its gap is a floor for theirs.
ORACLE = "hindsight pick (not valid)"


def hindsight_pick(scores: np.ndarray, right: np.ndarray, target: float, risk: float) -> float:
    """The threshold of :data:`ORACLE` (inf when no slice passes)."""
    order = np.argsort(-scores, kind="stable")
    counts = np.arange(1, len(scores) + 1)
    p = binomial_pvalue(np.cumsum(~right[order]), counts, 1 - target)
    passing = np.flatnonzero(p <= risk)
    return float(scores[order][passing.max()]) if len(passing) else float("inf")


def validity(
    name: str, n_golden: int, target: float, risk: float, splits: int, limit: int | None = None
) -> list[dict]:
    """Every target-mode procedure on the same splits (one set of predictions per split)."""
    rows, labels, _ = load(name)
    if limit is not None:
        rows = [rows[i] for i in np.random.default_rng(5).permutation(len(rows))[:limit]]
    cache = MemoryEmbeddingCache()
    tally = {
        p: {
            "met": 0,
            "certified": 0,
            "met_certified": 0,
            "share_gap": [],
            "threshold_gap": [],
            "shares": [],
            "golden_gap": [],
        }
        for p in (*PROCEDURES, ORACLE)
    }
    for split in range(splits):
        order = np.random.default_rng(split).permutation(len(rows))
        golden, test = order[:n_golden], order[n_golden:]
        g_probs, g_gold, t_probs, t_gold = predictions(rows, labels, golden, test, cache)
        g_scores, g_right = g_probs.max(axis=1), g_probs.argmax(axis=1) == g_gold
        g_hindsight = hindsight_human_share("target", g_scores, g_right, np.ones(len(g_right)), target=target)
        scores = t_probs.max(axis=1)
        right = t_probs.argmax(axis=1) == t_gold
        order_t = np.argsort(-scores, kind="stable")
        cum = np.cumsum(right[order_t]) / np.arange(1, len(scores) + 1)
        ok = np.flatnonzero(cum >= target)
        best_n = int(ok.max()) + 1 if len(ok) else 0  # hindsight: most items accepted at the target
        best_threshold = float(scores[order_t][best_n - 1]) if best_n else float("inf")
        for procedure in (*PROCEDURES, ORACLE):
            t = tally[procedure]
            if procedure == ORACLE:
                picked = hindsight_pick(g_scores, g_right, target, risk)
                cert = SimpleNamespace(threshold=picked, certified=math.isfinite(picked))
            else:
                draw = float(np.random.default_rng([7, split]).random())
                cert = certify_target(
                    g_scores, g_right, target=target, risk=risk, procedure=procedure, draw=draw
                )
            accepted = scores >= cert.threshold
            n = int(accepted.sum())
            if cert.certified:
                t["certified"] += 1
                t["shares"].append(n / len(scores))
                t["threshold_gap"].append(cert.threshold - best_threshold if best_n else float("nan"))
            t["share_gap"].append(best_n / len(scores) - n / len(scores))
            # The price on the golden items, as status and the report print it.
            t["golden_gap"].append(1 - (g_scores >= cert.threshold).mean() - g_hindsight)
            kept = bool(right[accepted].mean() >= target) if n else True  # accepting nothing keeps it
            t["met"] += kept
            t["met_certified"] += kept and cert.certified
    return [
        {
            "name": name,
            "procedure": procedure,
            "golden": n_golden,
            "test": len(rows) - n_golden,
            "target": target,
            "risk": risk,
            "splits": splits,
            "certified": t["certified"],
            "met": t["met"] / splits,
            "met_certified": t["met_certified"] / t["certified"] if t["certified"] else float("nan"),
            "share": float(np.mean(t["shares"])) if t["shares"] else 0.0,
            "share_gap": float(np.mean(t["share_gap"])),
            "share_gap_median": float(np.median(t["share_gap"])),
            "share_gap_std": float(np.std(t["share_gap"])),
            "golden_gap_median": float(np.median(t["golden_gap"])),
            "threshold_gap": float(np.nanmedian(t["threshold_gap"])) if t["threshold_gap"] else float("nan"),
        }
        for procedure, t in tally.items()
    ]


def validity_table(checks: list[dict], splits: int) -> list[str]:
    lines = [
        f"### Target-mode guarantee over {splits} random golden/test splits",
        "",
        '"Met" counts the splits whose accepted test items reach the target (a split that certifies',
        "nothing accepts nothing and keeps the promise); the gaps compare the chosen point with the best",
        "threshold in hindsight on the test items (share gap: how much more of the test set that",
        "threshold would have accepted, mean ± std and median; threshold gap: median chosen minus",
        "hindsight threshold); golden gap: median human share of the chosen point minus that of the",
        "best threshold in hindsight on the golden items (what `status`, `simulate` and the report",
        "print). Procedures: `fallback` (the default: Learn-then-Test with Wiens' fallback procedure",
        "over slices of halving size), `fixed-sequence` (the procedure before: all of the risk on the",
        "slice of half the golden items, then down to the first failure), `expected-start` (all of",
        "the risk on the slice the calibrated scores expect to pay most, then down to the first",
        "failure), `planned-start` (the same with that expectation computed exactly) and",
        "`planned-start-randomized` (the same with randomized exact binomial tests, one uniform per",
        "split shared by its slices; `routing.certification`); all on the same splits. The last row",
        "of each data set is",
        f"a floor, not a procedure: {ORACLE}, the largest golden slice that passes its own binomial",
        "test at the whole risk, picked knowing every outcome.",
        "",
        "| data | procedure | golden | test | target | risk | certified | met | required "
        "| met when certified | model share | share gap | median share gap | golden gap | threshold gap |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        ok = c["met"] >= 1 - c["risk"]
        verdict = "reference" if c["procedure"] == ORACLE else ("PASS" if ok else "MISS")
        lines.append(
            f"| {c['name']} | {c['procedure']} | {c['golden']} | {c['test']:,} | {c['target']} | {c['risk']} "
            f"| {c['certified']} / "
            f"{c['splits']} | {c['met']:.3f} | ≥ {1 - c['risk']:.2f}: {verdict} | "
            f"{c['met_certified']:.3f} | {c['share']:.1%} | {c['share_gap']:.1%} ± {c['share_gap_std']:.1%} "
            f"| {c['share_gap_median']:.1%} | {c['golden_gap_median']:.1%} | {c['threshold_gap']:.4f} |"
        )
        print(c)
    return lines


def simulation_table(sim: dict) -> list[str]:
    """The markdown lines of one simulated data set: its reference figures and its points."""
    lines = [
        f"**{sim['name']}** — {sim['golden']} golden, {sim['test']} replayed items; crowd majority vote "
        f"{sim['crowd']:.3f}, people alone (overlap 5) {sim['people']:.3f}, "
        f"model alone {sim['model']:.3f}; "
        f"an oracle choosing model or crowd per item {sim['oracle']:.3f}; "
        f"items that ran out of recorded answers (all points, all draws): {sim['ran_out']:,}.",
        "",
        "| policy | point | human accuracy | model accuracy | hybrid accuracy | human cost reduction |",
        "|---|---|---|---|---|---|",
    ]
    for (policy, point), (acc, reduction, _) in sim["points"].items():
        lines.append(
            f"| {policy} | {point} | {sim['people']:.3f} | {sim['model']:.3f} | {acc:.3f} | {reduction:.0%} |"
        )
    return [*lines, ""]


def draws_reaching(per_draw: list[tuple[float, float]], crowds: list[float]) -> int:
    """Draws whose hybrid is at least as accurate as that draw's crowd (its own test items)
    at no more than 25% of the humans-only cost."""
    return sum(a >= crowd and (1 - r) <= 0.25 for (a, r), crowd in zip(per_draw, crowds, strict=True))


def isbook_targets(isbook: dict) -> list[str]:
    """The amazon_isbook targets: cost mode vs the crowd, best quality vs crowd + 1 point."""
    cost_acc, cost_red, per_draw = isbook["points"][("threshold", "cost")]
    best_acc, _, _ = isbook["points"][("threshold", "best quality")]
    cost_ok = cost_acc >= isbook["crowd"] and (1 - cost_red) <= 0.25
    best_ok = best_acc >= isbook["crowd"] + 0.01
    draws_ok = draws_reaching(per_draw, isbook["crowd_draws"])
    return [
        "Targets on amazon_isbook (threshold policy, means over the draws):",
        "",
        f"- cost mode: hybrid {cost_acc:.3f} vs crowd majority vote {isbook['crowd']:.3f}, at "
        f"{1 - cost_red:.0%} of the humans-only labour cost (target ≥ crowd at ≤ 25%): "
        f"**{'PASS' if cost_ok else 'MISS'}** "
        f"({draws_ok} of {len(per_draw)} draws reach the crowd's accuracy at ≤ 25% of the cost).",
        f"- best quality: hybrid {best_acc:.3f} vs crowd + 1 point = {isbook['crowd'] + 0.01:.3f}: "
        f"**{'PASS' if best_ok else 'MISS'}**.",
        "- cost point, every policy (draws at least as accurate as their crowd at ≤ 25% of the cost): "
        + ", ".join(
            f"{policy} {draws_reaching(v, isbook['crowd_draws'])}/{len(v)}"
            for (policy, point), (_, _, v) in isbook["points"].items()
            if point == "cost"
        )
        + ".",
        "",
    ]


def learned_hybrid(args: argparse.Namespace, started: float) -> None:
    """amazon_isbook alone with ``--golden`` golden items and the ``--labeler`` labeler."""
    sim = simulation("amazon_isbook", args.golden, args.draws)
    model_acc = sim["model_draws"]
    lines = [
        f"Command: `python benchmarks/routing.py --labeler {args.labeler} --golden {args.golden} "
        f"--draws {args.draws} --record` — {date.today().isoformat()}, {platform.machine()}, 2 cores, "
        f"Python {platform.python_version()}, CPU only. Model alone over the draws: mean "
        f"{np.mean(model_acc):.3f}, std {np.std(model_acc):.3f}, min {np.min(model_acc):.3f}, "
        f"max {np.max(model_acc):.3f}.",
        "",
        *simulation_table(sim),
        *isbook_targets(sim),
        f"Run time {time.perf_counter() - started:.0f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section(
            f"Routing with the `{args.labeler}` labeler: amazon_isbook, {args.golden} golden items", text
        )


def validity_checks(splits: int) -> list[dict]:
    return [
        *validity("amazon_isbook", 150, 0.95, 0.1, splits),
        *validity("medrel", 150, 0.85, 0.1, splits),
        *validity("emotion", 300, 0.7, 0.1, splits, limit=3000),
    ]


def validity_only(args: argparse.Namespace, started: float) -> None:
    """The target-mode guarantee's splits alone (issue 13's waste target: on amazon_isbook the
    median human share within 10 points of the hindsight-optimal one)."""
    checks = validity_checks(args.splits)
    isbook = [c for c in checks if c["name"] == "amazon_isbook"]
    best = min(
        c["share_gap_median"] for c in isbook if c["procedure"] != ORACLE and c["met"] >= 1 - c["risk"]
    )
    lines = [
        f"Command: `python benchmarks/routing.py --validity-only --splits {args.splits} --record` — "
        f"{date.today().isoformat()}, {platform.machine()}, 2 cores, Python {platform.python_version()}, "
        "CPU only; `embedding` labeler as in the section above.",
        "",
        *validity_table(checks, args.splits)[1:],
        "",
        "Waste target on amazon_isbook (median share gap within 10 points of hindsight): "
        + ", ".join(f"{c['procedure']} {c['share_gap_median']:.1%}" for c in isbook)
        + f" — {'PASS' if best <= 0.10 else 'MISS'} for the best valid procedure ({best:.1%}).",
        "",
        f"Run time {time.perf_counter() - started:.0f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section(
            "Routing: the accepted-items guarantee by procedure (benchmarks/routing.py --validity-only)", text
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the figures into docs/benchmarks.md")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument(
        "--labeler",
        choices=["embedding", "finetune", "setfit"],
        default="embedding",
        help="with --golden: only the amazon_isbook simulation, in a section of its own",
    )
    parser.add_argument(
        "--golden", type=int, default=None, help="amazon_isbook golden items (with --labeler)"
    )
    parser.add_argument(
        "--validity-only", action="store_true", help="only the guarantee's splits, in a section of their own"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    global LABELER
    LABELER = args.labeler
    if args.golden is not None:
        return learned_hybrid(args, started)
    if args.validity_only:
        return validity_only(args, started)

    sims = [
        simulation("amazon_isbook", 150, args.draws),
        simulation("medrel", 150, args.draws),
        simulation("politifact_truth", 60, args.draws),
    ]
    lines = [
        f"Command: `python benchmarks/routing.py --record --draws {args.draws} --splits {args.splits}` — "
        f"{date.today().isoformat()}, {platform.machine()}, 2 cores, "
        f"Python {platform.python_version()}, CPU only.",
        "",
        f"### Simulated hybrid on real crowds (`embedding` labeler, mean of {args.draws} golden draws)",
        "",
        "People are answered from the recorded crowd answers (overlap 5, so people alone ≈ the crowd's",
        'majority vote over every answer); "human cost reduction" is against people alone labelling every',
        "test item. Points: target (certified, risk 0.1), cost (cheapest point expected to be at least",
        "as accurate as people alone), best quality (highest expected accuracy on the golden items).",
        "",
    ]
    for sim in sims:
        lines += simulation_table(sim)
    lines += isbook_targets(sims[0])
    lines += validity_table(validity_checks(args.splits), args.splits)
    lines += [
        "",
        f"Run time {time.perf_counter() - started:.0f} s; load average at the end "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())} (other work shared the 2 cores).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section("Routing: simulated hybrid and the target guarantee", text)


if __name__ == "__main__":
    main()
