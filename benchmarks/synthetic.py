"""Synthetic training items from the bundled Gemma 3 270M for the embedding labeler, per
generation mode and LLM path.

    python benchmarks/synthetic.py [--record] [--per-label 4] [--seeds 3] [--test 200]
        [--modes zero-shot few-shot taxonomy] [--backend llama openai] [--no-judge]
        [--out results.jsonl] [--from results.jsonl ...]

On ``amazon_isbook`` and ``emotion``, per backend, mode and seed: 20 golden items are drawn
(at least 20 // labels of each label), ``duolabel generate --mode MODE`` writes
``--per-label`` items per label with ``synthetic.seed`` = the seed and the LLM judge on
(``synthetic.judge``: the generating labeler labels each kept item; it flags, never drops),
and the embedding labeler (frozen MiniLM + logistic head, C = 1) is trained on (a) the 20
golden items, (b) the synthetic items only, (c) both; accuracy is measured on the same
``--test`` items for all three (never golden, never shown to the generator). Texts are cut
to ``--chars`` characters (golden, test and the few-shot examples alike) to keep the prompts
short. Reported: mean and min-max over seeds of the accuracies, the diversity figures, the
judge's rejection rate (share of judged items whose judged label is not the intended one),
generation speed (kept items per second the model spent generating, rejected candidates and
the judge excluded) and the run's cost per kept item (``costs`` defaults: compute at 0.1 per
hour, tokens free, so the cost is the machine time of generation and judge).

``--backend llama`` runs the model in-process; ``--backend openai`` starts
``llama_cpp.server`` on 127.0.0.1 serving the same GGUF and generates and judges through the
OpenAI-compatible API. Each seed's result is appended to ``--out`` as it finishes;
``--from`` renders (and with ``--record`` records) the table from such files, so a long run
can be recorded from what finished.

Gemma 3 270M is a small *base* model: this checks the mechanism and reports honestly what a
small model gives; it says nothing of what a large instruction-tuned model would give.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from _record import record_section  # noqa: E402

from duolabel import Project  # noqa: E402
from duolabel.labelers import EmbeddingLabeler, TextItem  # noqa: E402
from duolabel.labelers.embedding import MemoryEmbeddingCache  # noqa: E402
from duolabel.training_data import synthetic_training_items  # noqa: E402

HEADING = "Synthetic training items per mode and LLM path (Gemma 3 270M)"
INSTRUCTIONS = {
    "amazon_isbook": "Decide whether the Amazon product review is about a book.",
    "emotion": "Decide which emotion the tweet expresses.",
}
MODES = ("zero-shot", "few-shot", "taxonomy")


def load(name: str) -> tuple[list[dict], list[str], str]:
    """Rows, labels and the data set's own instruction (the task as its annotators read it)."""
    with (DATA / name / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    meta = json.loads((DATA / name / "labels.json").read_text(encoding="utf-8"))
    return rows, meta["labels"], meta.get("instruction") or INSTRUCTIONS[name]


def draw_golden(rows: list[dict], labels: list[str], n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    order = [rows[i] for i in rng.permutation(len(rows))]
    each = n // len(labels)
    golden = [r for label in labels for r in [x for x in order if x["gold"] == label][:each]]
    taken = {r["id"] for r in golden}
    golden += [r for r in order if r["id"] not in taken][: n - len(golden)]
    return golden


def accuracy(train: list[TextItem], gold: list[str], test: list[TextItem], truth: list[str], labels, cache):
    head = EmbeddingLabeler(labels=labels, regularization=1.0, cache=cache).fit(train, gold)
    probs, _ = head.predict_proba(test)
    return float(np.mean([labels[i] == t for i, t in zip(probs.argmax(axis=1), truth, strict=True)]))


def labeler_entry(backend: str, threads: int, server_url: str | None) -> dict[str, Any]:
    """The generating (and judging) labeler: zero-shot scoring, one thread / one request."""
    if backend == "llama":
        return {"backend": "llama", "few_shot": 0, "n_threads": threads}
    from tests.llm_server import MODEL_ALIAS

    return {
        "backend": "openai",
        "model": MODEL_ALIAS,
        "base_url": server_url,
        "few_shot": 0,
        "answer_tokens": 1,
        "concurrency": 1,
        "timeout": 300,
    }


def one_run(
    sets: dict,
    name: str,
    backend: str,
    mode: str,
    seed: int,
    args: argparse.Namespace,
    server_url: str | None,
) -> dict[str, Any]:
    train_rows, test_rows, labels, instructions, cache = sets[name]
    golden = draw_golden(train_rows, labels, 20, seed)
    config = {
        "task": {"labels": [{"name": label} for label in labels], "instructions": instructions},
        "labeler": [labeler_entry(backend, args.threads, server_url)],
        "synthetic": {"seed": seed, "max_tokens": args.max_tokens, "judge": args.judge},
    }
    with tempfile.TemporaryDirectory(prefix=f"synthetic-{name}-") as tmp:
        folder = Path(tmp)
        (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        with Project.open(folder) as project:
            frame = pd.DataFrame([{"id": r["id"], "text": r["text"], "gold": r["gold"]} for r in golden])
            project.add_items(frame, role="golden", gold_column="gold")
            project.add_items(pd.DataFrame([{"id": r["id"], "text": r["text"]} for r in test_rows]))
            started = time.perf_counter()
            result = project.generate(per_label=args.per_label, mode=mode)
            wall = time.perf_counter() - started
            synth, intended = synthetic_training_items(project, 0)
    gold_items = [TextItem(r["id"], r["text"], r["id"]) for r in golden]
    gold_labels = [r["gold"] for r in golden]
    test = [TextItem(r["id"], r["text"], r["id"]) for r in test_rows]
    truth = [r["gold"] for r in test_rows]
    kept = len(synth)
    missing = [label for label in labels if label not in intended]
    return {
        "command": " ".join(["python", "benchmarks/synthetic.py", *sys.argv[1:]]),
        "set": name,
        "backend": backend,
        "mode": mode,
        "seed": seed,
        "per_label": args.per_label,
        "golden": accuracy(gold_items, gold_labels, test, truth, labels, cache),
        "synthetic": None
        if missing
        else accuracy(synth, intended, test, truth, labels, MemoryEmbeddingCache()),
        "both": accuracy(
            gold_items + synth, gold_labels + intended, test, truth, labels, MemoryEmbeddingCache()
        ),
        "kept": kept,
        "items_s": kept / result.generation_seconds if result.generation_seconds else None,
        "wall_s": wall,
        "cost": result.cost,
        "cost_per_item": result.cost / kept if kept else None,
        "figures": result.figures,
        "rejected": result.rejected,
        "stopped": result.stopped,
    }


def spread(values: list[Any], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{np.mean(values):.{digits}f} ({min(values):.{digits}f} to {max(values):.{digits}f})"


def table(results: list[dict]) -> list[str]:
    """One row per (backend, data set, mode): mean (min-max) over its seeds."""
    lines = [
        "| path | data set | mode | seeds | (a) 20 golden | (b) synthetic only | (c) golden + synthetic "
        "| (c) - (a), same seed | kept | items/s | cost per kept item (USD) | distinct-2 | pairwise distance "
        "| judge rejection rate "
        "| rejected candidates |",
        "|---|---|---|--:|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["backend"], r["set"], r["mode"]), []).append(r)
    order = {m: i for i, m in enumerate(MODES)}
    for (backend, name, mode), rs in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1], order[g[0][2]])):
        rejected: dict[str, int] = {}
        for r in rs:
            for why, n in r["rejected"].items():
                rejected[why] = rejected.get(why, 0) + n
        figure = {
            key: spread([r["figures"].get(key) for r in rs]) for key in ("distinct_2", "pairwise_distance")
        }
        # A judge that abstained on every item judged nothing: its 0.0 rate would read as "all agree".
        judged = sum(r["figures"].get("judged", 0) for r in rs)
        rates = [r["figures"]["judge_rejection_rate"] for r in rs if r["figures"].get("judged")]
        figure["judge"] = f"{spread(rates)}, {judged} judged" if judged else "n/a: abstained on all"
        lines.append(
            f"| {backend} | {name} | {mode} | {len(rs)} | {spread([r['golden'] for r in rs])} "
            f"| {spread([r['synthetic'] for r in rs])} | {spread([r['both'] for r in rs])} "
            f"| {spread([r['both'] - r['golden'] for r in rs])} "
            f"| {spread([r['kept'] for r in rs], 0)} | {spread([r['items_s'] for r in rs])} "
            f"| {spread([r['cost_per_item'] for r in rs], 6)} | {figure['distinct_2']} "
            f"| {figure['pairwise_distance']} | {figure['judge']} "
            f"| {', '.join(f'{k} {v}' for k, v in sorted(rejected.items())) or 'none'} |"
        )
    return lines


def prepare(name: str, n_test: int, chars: int) -> tuple:
    """The data set's training pool, its fixed test items (``emotion``: the validation split),
    labels, instruction and an encoder cache; texts cut to ``chars`` characters."""
    rows, labels, instructions = load(name)
    rows = [{**r, "text": r["text"][:chars]} for r in rows]
    rng = np.random.default_rng(12345)
    pool = [r for r in rows if r.get("split", "validation") != "train"] if name == "emotion" else rows
    test_rows = [pool[i] for i in rng.choice(len(pool), size=min(n_test, len(pool)), replace=False)]
    train_rows = [r for r in rows if r.get("split") == "train"] if name == "emotion" else rows
    train_rows = [
        train_rows[i] for i in rng.choice(len(train_rows), size=min(2000, len(train_rows)), replace=False)
    ]
    test_ids = {r["id"] for r in test_rows}
    train_rows = [r for r in train_rows if r["id"] not in test_ids]
    return train_rows, test_rows, labels, instructions, MemoryEmbeddingCache()


def run(args: argparse.Namespace) -> list[dict]:
    sets = {name: prepare(name, args.test, args.chars) for name in args.sets}
    results: list[dict] = []
    for backend in args.backend:
        server = None
        if backend == "openai":
            os.environ.setdefault("OPENAI_API_KEY", "none")  # a local server takes any key
            from tests.llm_server import LlamaServer, gguf_path

            server = LlamaServer(gguf_path(), n_ctx=2048, args=["--n_threads", str(args.threads)]).start()
        try:
            for name in args.sets:
                for mode in args.modes:
                    for seed in range(args.first_seed, args.first_seed + args.seeds):
                        r = one_run(sets, name, backend, mode, seed, args, server and server.base_url)
                        results.append(r)
                        print(json.dumps(r), flush=True)
                        if args.out:
                            with Path(args.out).open("a", encoding="utf-8") as handle:
                                handle.write(json.dumps(r) + "\n")
        finally:
            if server is not None:
                server.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the section of docs/benchmarks.md")
    parser.add_argument("--per-label", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1"
    )
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--chars", type=int, default=300, help="cut every text to this many characters")
    parser.add_argument("--max-tokens", type=int, default=40, help="synthetic.max_tokens")
    parser.add_argument("--threads", type=int, default=1, help="llama threads (in-process or server)")
    parser.add_argument("--sets", nargs="+", default=["amazon_isbook", "emotion"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--backend", nargs="+", choices=("llama", "openai"), default=["llama"])
    parser.add_argument("--no-judge", dest="judge", action="store_false", help="synthetic.judge off")
    parser.add_argument("--out", help="append each seed's result (JSON lines) to this file")
    parser.add_argument("--from", dest="sources", nargs="+", help="render the table from these --out files")
    parser.add_argument("--note", default="", help="a sentence added to the recorded section (the reading)")
    args = parser.parse_args()
    if args.sources:
        results = [json.loads(line) for src in args.sources for line in Path(src).read_text().splitlines()]
    else:
        results = run(args)
    commands = "; ".join(f"`{c}`" for c in dict.fromkeys(r["command"] for r in results))
    lines = [
        f"Command(s): {commands}. {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other work (load average {os.getloadavg()[0]:.2f} when "
        "rendered), CPU only, bundled Gemma 3 270M GGUF (a small base model) on both paths: llama = "
        "in-process, openai = llama_cpp.server on 127.0.0.1. Judge on (flags only). Embedding labeler "
        "with C = 1; accuracy on the same test items for (a) 20 golden items, (b) synthetic items only, "
        "(c) both; every figure is mean (min to max) over seeds. Cost: the run's ledger cost under the "
        "default prices (compute 0.1 USD per hour, tokens free) divided by the kept items.",
        "",
        *table(results),
    ]
    if args.note:
        lines += ["", args.note]
    body = "\n".join(lines)
    print(body)
    if args.record:
        record_section(HEADING, body)


if __name__ == "__main__":
    main()
