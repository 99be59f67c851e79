"""Labeler throughput and quality on the shared data sets.

    python benchmarks/labelers.py [--record]

1. Throughput: the ``embedding`` labeler (encode + head, no cache) against the raw
   sentence-transformers encoder on the same texts, measured side by side (target: the
   labeler keeps at least 0.8 of the encoder's items/s).
2. Quality of the ``embedding`` labeler: accuracy, ECE (10 equal-mass bins) before and
   after calibration, Brier, NLL and error-detection AUROC on
   - ``amazon_isbook``: 150 golden items (seeded draw), measured on the other items;
   - ``emotion``: trained on the train split, calibrated on its out-of-fold
     probabilities, measured on the validation split (target: ECE <= 0.03 after).

Calibrators are fitted only on out-of-fold probabilities of the training items; the
measured items are never seen by the head or the calibrator.
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

from duolabel.core.calibration import CALIBRATORS, calibration_metrics  # noqa: E402
from duolabel.labelers import EmbeddingLabeler, TextItem  # noqa: E402
from duolabel.labelers.embedding import MemoryEmbeddingCache, default_model_path  # noqa: E402


def load(name: str) -> tuple[list[dict], list[str]]:
    with (DATA / name / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    labels = json.loads((DATA / name / "labels.json").read_text(encoding="utf-8"))["labels"]
    return rows, labels


def items_of(rows: list[dict]) -> list[TextItem]:
    return [TextItem(r["id"], r["text"], r["id"]) for r in rows]


def throughput(texts: list[TextItem], labels: list[str]) -> dict[str, float]:
    from sentence_transformers import SentenceTransformer

    train = texts[:200]
    gold = [labels[i % len(labels)] for i in range(len(train))]
    labeler = EmbeddingLabeler(labels=labels, cache=MemoryEmbeddingCache()).fit(train, gold)
    measured = texts[200:]
    labeler.cache = None  # measure real encoding, not the cache
    raw = SentenceTransformer(str(default_model_path()), device="cpu")
    raw.encode([t.text for t in measured[:64]], batch_size=64)  # warm-up, both share torch
    started = time.perf_counter()
    raw.encode([t.text for t in measured], batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    encoder_s = time.perf_counter() - started
    started = time.perf_counter()
    labeler.predict_proba(measured)
    labeler_s = time.perf_counter() - started
    return {
        "items": len(measured),
        "encoder_items_s": len(measured) / encoder_s,
        "labeler_items_s": len(measured) / labeler_s,
        "ratio": encoder_s / labeler_s,
    }


def quality(
    train_rows: list[dict], test_rows: list[dict], labels, *, method: str
) -> dict[str, dict[str, float]]:
    train, train_gold = items_of(train_rows), [r["gold"] for r in train_rows]
    test, test_gold = items_of(test_rows), [r["gold"] for r in test_rows]
    labeler = EmbeddingLabeler(labels=labels, cache=MemoryEmbeddingCache()).fit(train, train_gold)
    y_train = np.array([labels.index(g) for g in train_gold])
    y_test = np.array([labels.index(g) for g in test_gold])
    probs, _ = labeler.predict_proba(test)
    calibrator = CALIBRATORS.get(method)().fit(labeler.oof_proba_, y_train)
    return {
        "before": calibration_metrics(probs, y_test),
        "after": calibration_metrics(calibrator.transform(probs), y_test),
    }


def fmt_quality(
    name: str, result: dict[str, dict[str, float]], method: str, n_train: int, n_test: int
) -> str:
    b, a = result["before"], result["after"]
    return (
        f"| {name} | {n_train:,} | {n_test:,} | {a['accuracy']:.3f} | {b['ece']:.3f} | {a['ece']:.3f} "
        f"({method}) | {b['brier']:.3f} / {a['brier']:.3f} | {b['nll']:.3f} / {a['nll']:.3f} "
        f"| {a['auroc']:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the figures into docs/benchmarks.md")
    parser.add_argument("--method", default="temperature", help="calibrator (default: temperature)")
    args = parser.parse_args()

    amazon, amazon_labels = load("amazon_isbook")
    rng = np.random.default_rng(7)
    order = rng.permutation(len(amazon))
    golden = [amazon[i] for i in order[:150]]
    rest = [amazon[i] for i in order[150:]]
    emotion, emotion_labels = load("emotion")
    e_train = [r for r in emotion if r["split"] == "train"]
    e_val = [r for r in emotion if r["split"] == "validation"]

    speed = throughput(items_of(e_val), emotion_labels)
    print(
        f"throughput on {speed['items']} emotion tweets: encoder {speed['encoder_items_s']:.0f} items/s, "
        f"embedding labeler {speed['labeler_items_s']:.0f} items/s, ratio {speed['ratio']:.2f}"
    )
    amazon_q = quality(golden, rest, amazon_labels, method=args.method)
    print("amazon_isbook", amazon_q)
    emotion_q = quality(e_train, e_val, emotion_labels, method=args.method)
    print("emotion", emotion_q)

    ece = emotion_q["after"]["ece"]
    lines = [
        f"Command: `python benchmarks/labelers.py --record` — {date.today().isoformat()}, "
        f"{platform.machine()}, 2 cores, Python {platform.python_version()}, CPU only.",
        "",
        f"Load average (1/5/15 min) at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "Throughput, measured side by side in one process on the emotion validation tweets:",
        "",
        "| texts | raw encoder items/s | `embedding` labeler items/s | ratio | target |",
        "|---|---|---|---|---|",
        f"| {speed['items']:,} | {speed['encoder_items_s']:.0f} | {speed['labeler_items_s']:.0f} | "
        f"{speed['ratio']:.2f} | ≥ 0.8: {'PASS' if speed['ratio'] >= 0.8 else 'MISS'} |",
        "",
        "Quality of the `embedding` labeler (all-MiniLM-L6-v2 + logistic regression). ECE uses 10 equal-mass",
        "bins; the calibrator is fitted on out-of-fold probabilities of the training items only; AUROC is",
        "for telling the model's wrong labels from its right ones by confidence.",
        "",
        "| data | train | measured | accuracy | ECE before | ECE after | Brier before / after | "
        "NLL before / after | AUROC |",
        "|---|---|---|---|---|---|---|---|---|",
        fmt_quality("amazon_isbook (150 golden)", amazon_q, args.method, len(golden), len(rest)),
        fmt_quality("emotion (train → validation)", emotion_q, args.method, len(e_train), len(e_val)),
        "",
        f"Target on emotion validation: ECE ≤ 0.03 after calibration: {ece:.3f}, "
        f"{'PASS' if ece <= 0.03 else 'MISS'}.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section("Labelers: throughput and quality (benchmarks/labelers.py)", text)


if __name__ == "__main__":
    main()
