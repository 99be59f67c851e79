"""How well each signal ranks the model's errors on held-out items (issue 13, item 4).

The human share any routing guarantee needs is bounded by how well its score ranks the model's
errors, measured here as the AUROC of each signal for "the model's label is wrong" on test items
the model never saw, for the default ``embedding`` labeler (MiniLM + logistic head, temperature
calibration fitted on the golden items' out-of-fold probabilities, as ``duolabel run`` does):

- confidence, margin, entropy of the calibrated distribution;
- neighbourhood accuracy: the model's accuracy on the 10 golden items nearest each test item;
- combined: the meta-router (``routing.policy: meta``) trained on the golden items' cross-fitted
  signals (these plus text length), applied to the test items.

Ensemble disagreement needs a second labeler (it is 0 for one labeler) and prompt-variant
disagreement an LLM labeler: ``--labelers`` measures every signal on amazon_isbook with two
labelers, the embedding labeler and the bundled Gemma 3 270M (``llama`` backend,
``prompt_variants: 2``, 1 llama.cpp thread, texts cut to 200 characters, few-shot examples from
a fixed pool outside every draw), fused by the calibrate stage's equal-weight ensemble; AUROC for
the ensemble's errors. Gemma scores the items once; its distributions and prompt disagreement are
kept in ``--cache`` for every seed.

Data: amazon_isbook (100 golden), medrel (150 golden), emotion (500 golden drawn from the
training split, the 2,000 validation tweets as test). Mean ± standard deviation over seeds (the
golden draw changes). Vectors are encoded once and kept in ``--cache`` (outside the repository).

    python benchmarks/error_ranking.py --seeds 5 [--record]
    python benchmarks/error_ranking.py --labelers --items 400 --golden 100 --seeds 10 [--record]
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

from duolabel.core.calibration import (  # noqa: E402
    CALIBRATORS,
    cross_validated,
    ensemble_average,
    ensemble_disagreement,
)
from duolabel.core.evidence import ERROR_SIGNALS, error_ranking, log_length, neighbourhood_accuracy  # noqa: E402
from duolabel.core.policies import MetaRouter  # noqa: E402
from duolabel.core.probs import signals  # noqa: E402
from duolabel.core.prompt_variants import PROMPT_DISAGREEMENT  # noqa: E402
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


def embedding_probs(rows, labels, X, golden, test) -> tuple[np.ndarray, np.ndarray]:
    """The embedding labeler fitted on ``golden``, temperature-calibrated as ``duolabel run``
    does: the golden items' cross-fitted distributions and the test items' ones."""
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
    return g_probs, CALIBRATORS.get("temperature")().fit(oof, y[golden]).transform(raw)


def ranking(
    g_probs, t_probs, g_wrong, t_wrong, g_vectors, t_vectors, g_texts, t_texts, g_extra=None, t_extra=None
):
    """AUROC of each signal for ``t_wrong`` and of the meta-router fitted on the golden items'
    signals (plus ``g_extra``/``t_extra``: the labelers' own features, as the route stage reads
    them); ``combined`` uses all of them."""
    g_right = (~np.asarray(g_wrong, dtype=bool)).astype(float)
    g_features = {
        "log_length": log_length(g_texts),
        "neighbourhood_accuracy": neighbourhood_accuracy(
            g_vectors, g_vectors, g_right, own=list(range(len(g_right)))
        ),
        **(g_extra or {}),
    }
    t_features = {
        "log_length": log_length(t_texts),
        "neighbourhood_accuracy": neighbourhood_accuracy(t_vectors, g_vectors, g_right),
        **(t_extra or {}),
    }
    router = MetaRouter().fit(g_probs, g_features, g_right == 0)
    found = signals(t_probs)
    raw_signals = {
        "confidence": found["max_prob"],
        "margin": found["margin"],
        "entropy": found["entropy"],
        **{k: v for k, v in t_features.items() if k != "log_length"},
    }
    return error_ranking(raw_signals, t_wrong, combined=router.score(t_probs, t_features))


def one_split(rows, labels, X, golden, test) -> dict[str, float]:
    y = np.array([labels.index(r["gold"]) for r in rows])
    g_probs, t_probs = embedding_probs(rows, labels, X, golden, test)
    t_wrong = t_probs.argmax(axis=1) != y[test]
    texts = [r["text"] for r in rows]
    out = ranking(
        g_probs,
        t_probs,
        g_probs.argmax(axis=1) != y[golden],
        t_wrong,
        X[golden],
        X[test],
        [texts[i] for i in golden],
        [texts[i] for i in test],
    )
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


# -- all signals on one data set with two labelers (--labelers) ------------------------------

TWO = "amazon_isbook"
TWO_SHOWN = (
    "confidence",
    "margin",
    "entropy",
    "neighbourhood_accuracy",
    "disagreement",
    PROMPT_DISAGREEMENT,
    "combined",
)


def gemma_scores(rows, labels, X, pool, scored, cache: Path, *, chars: int, few_shot: int, variants: int):
    """The bundled Gemma's distributions of the ``scored`` items and their prompt disagreement,
    with ``few_shot`` nearest examples from the fixed ``pool`` (never a golden or test item, so
    one scoring serves every seed); kept in ``cache``."""
    ids = [rows[i]["id"] for i in scored]
    path = cache / f"{TWO}-gemma-{chars}c-{few_shot}shot-{variants}v-{len(pool)}p-{len(scored)}.npz"
    if path.exists():
        saved = np.load(path)
        assert list(saved["ids"]) == ids, f"{path} holds other items: delete it"
        return saved["probs"], saved["prompt"], float(saved["seconds"])
    from duolabel.labelers.llama import LlamaLabeler

    instruction = json.loads((DATA / TWO / "labels.json").read_text(encoding="utf-8"))["instruction"]
    index = {r["id"]: i for i, r in enumerate(rows)}

    def encode(batch):  # the cached MiniLM vectors choose the nearest examples
        return X[[index[item.id] for item in batch]]

    def items(which):
        return [TextItem(rows[i]["id"], rows[i]["text"][:chars], rows[i]["id"]) for i in which]

    labeler = LlamaLabeler(
        labels=labels,
        instructions=instruction,
        few_shot=few_shot,
        encode=encode,
        n_ctx=2048,
        n_threads=1,
        prompt_variants=variants,
    ).fit(items(pool), [rows[i]["gold"] for i in pool])
    started = time.process_time()
    probs, usage = labeler.predict_proba(items(scored))
    seconds = time.process_time() - started
    labeler.close()
    prompt = np.array([labeler.item_features_.get(i, {}).get(PROMPT_DISAGREEMENT, np.nan) for i in ids])
    print(f"gemma scored {len(ids)} items in {seconds:.0f} s CPU ({usage.extra})", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, ids=np.array(ids), probs=probs, prompt=prompt, seconds=seconds)
    return probs, prompt, seconds


def ensemble(members: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The calibrate stage's fusion (equal weights): the average and each item's disagreement."""
    weights = np.ones(len(members))
    stacked = np.stack(members, axis=1)  # items, members, labels
    avg = np.array([ensemble_average(d, weights) for d in stacked])
    return avg, np.array([ensemble_disagreement(d, weights, a) for d, a in zip(stacked, avg, strict=True)])


def two_labeler_split(rows, labels, X, gemma, prompt, golden, test) -> dict[str, float]:
    """One golden/test draw of the scored items (``gemma``/``prompt`` are indexed like ``rows``)."""
    y = np.array([labels.index(r["gold"]) for r in rows])
    e_golden, e_test = embedding_probs(rows, labels, X, golden, test)
    # Gemma's golden distributions are honest already (its examples come from the pool).
    l_golden = cross_validated("temperature", gemma[golden], y[golden])
    l_test = CALIBRATORS.get("temperature")().fit(gemma[golden], y[golden]).transform(gemma[test])
    g_avg, g_dis = ensemble([e_golden, l_golden])
    t_avg, t_dis = ensemble([e_test, l_test])
    texts = [r["text"] for r in rows]
    t_wrong = t_avg.argmax(axis=1) != y[test]
    common = (g_avg, t_avg, g_avg.argmax(axis=1) != y[golden], t_wrong, X[golden], X[test])
    common += ([texts[i] for i in golden], [texts[i] for i in test])
    out = ranking(
        *common,
        {"disagreement": g_dis, PROMPT_DISAGREEMENT: prompt[golden]},
        {"disagreement": t_dis, PROMPT_DISAGREEMENT: prompt[test]},
    )
    out["combined_without_prompt"] = ranking(*common, {"disagreement": g_dis}, {"disagreement": t_dis})[
        "combined"
    ]
    l_wrong = l_test.argmax(axis=1) != y[test]
    out["prompt_for_gemma"] = error_ranking({PROMPT_DISAGREEMENT: prompt[test]}, l_wrong)[PROMPT_DISAGREEMENT]
    out["accuracy"] = float(1 - t_wrong.mean())
    out["golden_errors"] = float((g_avg.argmax(axis=1) != y[golden]).sum())
    out["accuracy_embedding"] = float((e_test.argmax(axis=1) == y[test]).mean())
    out["accuracy_gemma"] = float(1 - l_wrong.mean())
    return out


def run_two(args) -> None:
    rows, labels, X = vectors(TWO, args.cache)
    # A fixed draw, the same for every seed: the few-shot pool and the items Gemma scores.
    order = np.random.default_rng(1000).permutation(len(rows))
    pool, scored = order[: args.pool], order[args.pool : args.pool + args.items]
    gemma, prompt, seconds = gemma_scores(
        rows, labels, X, pool, scored, args.cache, chars=args.chars, few_shot=args.few_shot, variants=2
    )
    full_gemma = np.full((len(rows), len(labels)), np.nan)
    full_prompt = np.full(len(rows), np.nan)
    full_gemma[scored], full_prompt[scored] = gemma, prompt
    usable = scored[~np.isnan(gemma).any(axis=1)]  # an abstention has no distribution to fuse
    figures: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        shuffled = np.random.default_rng(seed).permutation(usable)
        golden, test = shuffled[: args.golden], shuffled[args.golden :]
        for key, value in two_labeler_split(rows, labels, X, full_gemma, full_prompt, golden, test).items():
            figures.setdefault(key, []).append(value)
    figures["prompt_gain"] = [
        a - b for a, b in zip(figures["combined"], figures["combined_without_prompt"], strict=True)
    ]
    shown = (
        "accuracy_embedding",
        "accuracy_gemma",
        "accuracy",
        *TWO_SHOWN,
        "combined_without_prompt",
        "prompt_for_gemma",
        "prompt_gain",
    )
    names = {
        "accuracy_embedding": "embedding accuracy",
        "accuracy_gemma": "Gemma accuracy",
        "accuracy": "ensemble accuracy",
        "combined_without_prompt": "combined without prompt_disagreement",
        "prompt_for_gemma": "prompt_disagreement for Gemma's own errors",
        "prompt_gain": "combined minus combined without prompt_disagreement (paired per draw)",
    }
    table = ["| figure | mean ± std | min-max |", "|---|---|---|"]
    for key in shown:
        values = figures[key]
        table.append(f"| {names.get(key, key)} | {fig(values)} | {min(values):.3f}-{max(values):.3f} |")
    legend = "\n".join(f"- `{s}`: {ERROR_SIGNALS[s][0]}" for s in TWO_SHOWN if s != "combined")
    body = (
        "Command: `python benchmarks/error_ranking.py --labelers "
        f"--items {args.items} --golden {args.golden} --seeds {args.seeds} --record`. "
        f"One data set ({TWO}), two labelers fused by the calibrate stage's "
        "equal-weight ensemble (`ensemble_average`, `ensemble_disagreement`): the embedding labeler "
        "(MiniLM + logistic head on the golden items, full texts) and the bundled Gemma 3 270M (base model) "
        f"through the `llama` backend with `prompt_variants: 2`, {args.few_shot} nearest examples from a "
        f"fixed pool of {args.pool} items that are never golden or test items, texts cut to {args.chars} "
        "characters, "
        f"1 llama.cpp thread ({seconds:.0f} s CPU for the {len(scored)} items, "
        f"{len(usable)} without abstention, scored once and cached). Each labeler is temperature-calibrated "
        f"on the golden items. Per seed {args.golden} golden items are drawn from the scored ones and the "
        f"other {len(usable) - args.golden} are the test items; AUROC for the errors of the ensemble's "
        f"prediction on the test items, mean ± standard deviation (and min-max) over {args.seeds} draws.\n\n"
        + "\n".join(table)
        + "\n\n"
        + legend
        + "\n- `combined`: the meta-router (`routing.policy: meta`) fitted on the golden items' signals "
        "(all of the above plus text length) and applied to the test items; `combined without "
        "prompt_disagreement` is the same router without that input (as before it became one).\n"
        "- `prompt_disagreement for Gemma's own errors`: the signal against the errors of Gemma's calibrated "
        "prediction rather than the ensemble's."
    )
    body += "\n\n" + reading(figures)
    print(body)
    if args.record:
        record_section("Error ranking: all signals with two labelers", body)


def reading(figures: dict[str, list[float]]) -> str:
    """What the two-labeler figures say, worded from the figures themselves."""
    mean = {key: statistics.mean(values) for key, values in figures.items()}
    spread = {key: statistics.stdev(values) if len(values) > 1 else 0.0 for key, values in figures.items()}
    best = max(("confidence", "margin", "entropy", "disagreement", "neighbourhood_accuracy"), key=mean.get)
    side = "worse than chance" if mean[PROMPT_DISAGREEMENT] < 0.5 else "better than chance"
    gain = mean["prompt_gain"]
    helps = abs(gain) > spread["prompt_gain"]
    return (
        f"Reading: Gemma's prompt disagreement ranks the ensemble's errors {side} "
        f"(AUROC {mean[PROMPT_DISAGREEMENT]:.3f} ± {spread[PROMPT_DISAGREEMENT]:.3f}; "
        f"{mean['prompt_for_gemma']:.3f} for Gemma's own errors): the two paraphrases move the base 270M "
        + (
            "model's distribution more on items it gets right than on those it gets wrong"
            if side[0] == "w"
            else "model's distribution more on the items it gets wrong"
        )
        + ". As an input of the meta-router it changes the combined AUROC by "
        f"{gain:+.3f} ± {spread['prompt_gain']:.3f} per draw, "
        + ("more than its spread. " if helps else "within its spread: no measurable gain. ")
        + f"The best single signal is `{best}` ({mean[best]:.3f}); the combined score "
        + (
            "beats it"
            if mean["combined"] > mean[best]
            else f"does not beat it ({mean['combined']:.3f}): with about {mean['golden_errors']:.0f} errors "
            "among the golden items to learn from, the router's extra inputs likely cost more in variance "
            "than they add"
        )
        + "."
    )


def fig(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path("/work/bench/ranking"))
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--labelers", action="store_true", help="the two-labeler run on amazon_isbook")
    parser.add_argument("--items", type=int, default=200, help="items Gemma scores (--labelers)")
    parser.add_argument("--golden", type=int, default=80, help="golden items per draw (--labelers)")
    parser.add_argument("--pool", type=int, default=16, help="Gemma's few-shot pool (--labelers)")
    parser.add_argument("--few-shot", type=int, default=2)
    parser.add_argument("--chars", type=int, default=200)
    args = parser.parse_args()
    if args.labelers:
        run_two(args)
        return
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
        "second labeler and prompt-variant disagreement an LLM labeler with `prompt_variants`; both "
        'are measured, beside all the other signals, in the section "Error ranking: all signals with '
        'two labelers".'
    )
    print(body)
    if args.record:
        record_section("Error ranking: AUROC of each routing signal", body)


if __name__ == "__main__":
    main()
