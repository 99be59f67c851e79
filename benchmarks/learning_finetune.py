"""Learning curves of the fine-tuned labelers against the frozen embedding labeler.

    python benchmarks/learning_finetune.py [--sizes 100,200,500,1000,2000] [--seeds 5]
        [--draws 10] [--labelers finetune,setfit,embedding] [--parts emotion,amazon] [--record]
        [--heading "Learning: fine-tuned labelers"]

(a) emotion: for each size and seed, a random sample of the train split (topped up to two
    items per label, the least any labeler trains on) trains each labeler with its default
    settings; it is measured on the validation split: accuracy, error-detection AUROC
    (raw confidence against correctness), train seconds (wall and CPU of all threads: on a
    shared machine the wall time says more about the load than about the labeler),
    predict items/s and peak RSS.
(b) amazon_isbook: ``--draws`` seeded draws of 100 golden items; each labeler alone is
    measured on the other items.

Every run is its own process, so its peak RSS is its own and no model state leaks between
runs. The frozen labeler's training vectors are cached under /work/bench/ft (its train
seconds are the head's; its predict items/s encode the measured texts anew). Figures are
means over seeds or draws with their standard deviation and range. Nothing is tuned to the
measured items: every labeler runs on its defaults, except the variants named in
``VARIANTS`` (``finetune-refit``: finetune with ``refit: true``; ``finetune-6ep`` and
``finetune-12ep``: with ``max_epochs`` 6, the default before 2026-12-01, and 12, the default
since; ``finetune-ensemble``: with ``ensemble: true``, which also reports its own final model
alone, a paired comparison on the same trainings; ``finetune-cv`` and
``finetune-fold``: with ``choose_epochs`` ``cross_fit`` (the default since 2026-12-01) and
``validation_fold`` (the default before)).
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
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
CACHE = Path(os.environ.get("DUOLABEL_BENCH_CACHE", "/work/bench/ft"))
sys.path.insert(0, str(REPO / "benchmarks"))

from _record import record_section  # noqa: E402

LABELERS = ("finetune", "setfit", "embedding")
#: Variants measured on request (``--labelers``): a labeler name and the options it gets.
VARIANTS = {
    "finetune-refit": ("finetune", {"refit": True}),
    "finetune-6ep": ("finetune", {"max_epochs": 6}),
    "finetune-12ep": ("finetune", {"max_epochs": 12}),
    "finetune-ensemble": ("finetune", {"ensemble": True}),
    "finetune-cv": ("finetune", {"choose_epochs": "cross_fit"}),
    "finetune-fold": ("finetune", {"choose_epochs": "validation_fold"}),
}


def load(name: str) -> tuple[list[dict], list[str]]:
    with (DATA / name / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    labels = json.loads((DATA / name / "labels.json").read_text(encoding="utf-8"))["labels"]
    return rows, labels


def emotion_sample(train: list[dict], labels: list[str], size: int, seed: int) -> list[int]:
    """``size`` random train items, topped up to two per label (a label with fewer cannot
    be split into folds)."""
    rng = np.random.default_rng(seed)
    chosen = list(rng.permutation(len(train))[:size])
    for label in labels:
        have = [i for i in chosen if train[i]["gold"] == label]
        spare = [i for i in rng.permutation(len(train)) if train[i]["gold"] == label and i not in have]
        chosen += spare[: max(0, 2 - len(have))]
    return [int(i) for i in chosen]


class DiskCache:
    """Encoder vectors of one data set kept in an .npz file (the frozen labeler's cache)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.vectors: dict[str, np.ndarray] = {}
        if path.exists():
            with np.load(path) as saved:
                self.vectors = dict(zip(saved["ids"].tolist(), saved["vectors"], strict=True))

    def get(self, items):
        return {i.id: self.vectors[i.id] for i in items if i.id in self.vectors}

    def put(self, items, vectors) -> None:
        self.vectors.update({i.id: v for i, v in zip(items, vectors, strict=True)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ids = list(self.vectors)
        np.savez(self.path, ids=np.array(ids), vectors=np.vstack([self.vectors[i] for i in ids]))


def one_run(spec: dict) -> dict:
    """Train one labeler on the chosen items and measure it (runs in its own process)."""
    from duolabel.core.calibration import error_detection_auroc
    from duolabel.labelers import EmbeddingLabeler, TextItem
    from duolabel.labelers.finetune import FineTuneLabeler, SetFitLabeler

    rows, labels = load(spec["data"])
    train = [rows[i] for i in spec["train"]]
    test = [rows[i] for i in spec["test"]]

    def items(part: list[dict]) -> list[TextItem]:
        return [TextItem(r["id"], r["text"], r["id"]) for r in part]

    name, options = VARIANTS.get(spec["labeler"], (spec["labeler"], {}))
    if name == "embedding":
        model = EmbeddingLabeler(labels=labels, cache=DiskCache(CACHE / f"{spec['data']}-minilm.npz"))
    else:
        cls = FineTuneLabeler if name == "finetune" else SetFitLabeler
        model = cls(labels=labels, random_state=spec["seed"], **options)
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(items(train), [r["gold"] for r in train])
    # CPU seconds of all threads: on a shared machine the wall time depends on the load.
    train_cpu_s = time.process_time() - cpu_started
    train_s = time.perf_counter() - started
    if name == "embedding":
        model.cache = None  # predict speed: encode the measured texts for real
    started = time.perf_counter()
    probs, _ = model.predict_proba(items(test))
    predict_s = time.perf_counter() - started
    gold = np.array([labels.index(r["gold"]) for r in test])
    info = getattr(model, "fit_info_", {})

    def scored(proba: np.ndarray, prefix: str = "") -> dict:
        return {
            f"{prefix}accuracy": float((proba.argmax(axis=1) == gold).mean()),
            f"{prefix}auroc": float(error_detection_auroc(proba, gold)),
        }

    paired = {}
    if getattr(model, "members_", []):  # the ensemble's own final model alone, on the same training
        paired = scored(model._predict(model.model_, [r["text"] for r in test], None), "alone_")
    return {
        **paired,
        **scored(probs),
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "predict_items_s": len(test) / predict_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "mode": info.get("mode", "cross_fit"),
        "epochs": info.get("epochs", 0),
    }


def run(spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"run {spec['labeler']} {spec['data']} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    where = f"{spec['labeler']:9} {spec['data']} n={len(spec['train'])} seed={spec['seed']}"
    print(f"  {where}: {result}", flush=True)
    return result


def summary(results: list[dict], key: str, digits: int = 3) -> str:
    values = np.array([r[key] for r in results])
    spread = f" ± {values.std():.{digits}f} [{values.min():.{digits}f}–{values.max():.{digits}f}]"
    return f"{values.mean():.{digits}f}" + (spread if len(values) > 1 else "")


def row(name: str, label: str, results: list[dict]) -> str:
    modes = "/".join(sorted({r["mode"] for r in results}))
    return (
        f"| {name} | {label} | {summary(results, 'accuracy')} | {summary(results, 'auroc')} | "
        f"{summary(results, 'train_s', 0)} | {summary(results, 'train_cpu_s', 0)} | "
        f"{summary(results, 'predict_items_s', 0)} | "
        f"{max(r['peak_rss_mb'] for r in results):.0f} | {modes} |"
    )


def paired_lines(name: str, label: str, results: list[dict]) -> list[str]:
    """For an ensemble: its final model alone and the paired difference, as a sentence."""
    if not results or "alone_accuracy" not in results[0]:
        return []
    diff = [{"d": r["accuracy"] - r["alone_accuracy"], "a": r["auroc"] - r["alone_auroc"]} for r in results]
    better = sum(d["d"] > 0 for d in diff)
    worse = sum(d["d"] < 0 for d in diff)
    alone = [{"accuracy": r["alone_accuracy"], "auroc": r["alone_auroc"]} for r in results]
    return [
        f"- {name}, {label}: its final model alone (the plain `finetune` of the same training) "
        f"{summary(alone, 'accuracy')}, error AUROC {summary(alone, 'auroc')}; the ensemble minus it, "
        f"paired: accuracy {summary(diff, 'd')} ({better} better, {worse} worse of {len(diff)}), "
        f"error AUROC {summary(diff, 'a')}."
    ]


HEADER = [
    "| labeler | labels | accuracy | error AUROC | train s | train CPU s | predict items/s | peak RSS MB "
    "| honest probs |",
    "|---|---|---|---|---|---|---|---|---|",
]


def emotion_curve(sizes: list[int], seeds: int, labelers: list[str], first: int = 0) -> list[str]:
    rows, labels = load("emotion")
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    test = [i for i, r in enumerate(rows) if r["split"] == "validation"]
    train_rows = [rows[i] for i in train]
    lines, notes = [*HEADER], []
    for size in sizes:
        for name in labelers:
            results = []
            for seed in range(first, seeds):
                picked = [train[i] for i in emotion_sample(train_rows, labels, size, seed)]
                spec = {"data": "emotion", "labeler": name, "train": picked, "test": test, "seed": seed}
                results.append(run(spec))
            lines.append(row(name, f"{size:,}", results))
            notes += paired_lines(name, f"{size:,} labels", results)
    return lines + ([""] + notes if notes else [])


def amazon_draws(draws: int, labelers: list[str], golden: int = 100) -> list[str]:
    rows, _labels = load("amazon_isbook")
    lines, notes = [*HEADER], []
    for name in labelers:
        results = []
        for draw in range(draws):
            order = [int(i) for i in np.random.default_rng(draw).permutation(len(rows))]
            spec = {"data": "amazon_isbook", "labeler": name, "train": order[:golden]}
            results.append(run({**spec, "test": order[golden:], "seed": draw}))
        lines.append(row(name, f"{golden} golden", results))
        notes += paired_lines(name, f"{golden} golden items", results)
    return lines + ([""] + notes if notes else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,200,500,1000,2000", help="training set sizes on emotion")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per size (emotion)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="start at this seed (emotion), to finish a stopped run"
    )
    parser.add_argument("--draws", type=int, default=10, help="golden draws on amazon_isbook")
    parser.add_argument(
        "--labelers",
        default=",".join(LABELERS),
        help=f"which labelers to compare (also the variants {', '.join(VARIANTS)})",
    )
    parser.add_argument("--parts", default="emotion,amazon", help="emotion, amazon or both")
    parser.add_argument("--record", action="store_true", help="write the figures into docs/benchmarks.md")
    parser.add_argument(
        "--heading", default="Learning: fine-tuned labelers", help="the docs/benchmarks.md section to write"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(json.loads(args.one))))
        return
    labelers = args.labelers.split(",")
    parts = args.parts.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    start_load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    text = [
        f"Command: `python benchmarks/learning_finetune.py --sizes {args.sizes} --seeds {args.seeds} "
        + (f"--first-seed {args.first_seed} " if args.first_seed else "")
        + f"--draws {args.draws} --labelers {args.labelers} --parts {args.parts}` — "
        f"{date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, CPU only, "
        "every labeler on its default settings"
        + "".join(
            f" ({name}: {base} with {options})"
            for name, (base, options) in VARIANTS.items()
            if name in args.labelers.split(",")
        )
        + ", torch on all cores.",
        "",
        "Mean ± standard deviation [min–max] over seeds (emotion) or golden draws (amazon_isbook). "
        "Error AUROC: how well the raw confidence tells the model's wrong labels from its right ones. "
        "Honest probs: how the training items got out-of-sample probabilities for calibration "
        "(cross_fit: every item; held_out: a 15% calibration fold).",
    ]
    if "emotion" in parts:
        text += ["", "Emotion (6 labels): train split sample → the 2,000 validation tweets.", ""]
        text += emotion_curve(sizes, args.seeds, labelers, args.first_seed)
    if "amazon" in parts:
        text += ["", "amazon_isbook: 100 golden items, the model alone on the other 599 reviews.", ""]
        text += amazon_draws(args.draws, labelers)
    load_avg = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    text += [
        "",
        f"Total {time.perf_counter() - started:.0f} s; load average (1 / 5 / 15 min) at the start "
        f"{start_load}, at the end {load_avg}.",
    ]
    body = "\n".join(text)
    print(body)
    if args.record:
        record_section(f"{args.heading} (benchmarks/learning_finetune.py)", body)


if __name__ == "__main__":
    main()
