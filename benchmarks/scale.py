"""End to end at scale: import -> embedding labeler -> calibrate -> route -> export.

Generates ``--n`` short support-ticket texts (a fixed seed; three labels, each text a few
words of its label's topic among common words) and 300 golden items, then, in a fresh
project per run, times each stage and takes its peak memory (the resident memory of this
process and every process under it, Ray's included, sampled every 0.1 s). Each stage is set
against its floor, measured on the same machine in the same invocation:

* import, route, export: the raw SQLite insert rate (``executemany`` of the rows' id and
  text into a bare table, one transaction) -- what any store write of n rows costs;
* label: the raw encoder throughput (``SentenceTransformer.encode`` of the same texts,
  batch 64, this process's torch threads).

A ratio of 0.5 means the stage runs at half its floor's items/s.

    python benchmarks/scale.py                        # 1,000,000 items, local engine
    python benchmarks/scale.py --n 20000 --engine local,ray --runs 3 --record
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
# A local Ray's workers import duolabel too: from this tree, as this process does.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(HERE.parent / "src"), os.environ.get("PYTHONPATH")])
)

from _record import record_section  # noqa: E402

SEED = 20261130
LABELS = ["billing", "shipping", "technical"]
# Words as one string each, split once (a list literal per word would fill a page).
TOPIC = {
    "billing": "refund charge invoice card payment price subscription fee receipt discount".split(),  # noqa: SIM905
    "shipping": "parcel delivery tracking courier address package shipped arrived late box".split(),  # noqa: SIM905
    "technical": "app crash error login page button loading screen update browser".split(),  # noqa: SIM905
}
COMMON = (  # noqa: SIM905
    "the my a is was not it and to please help I we you again still today since order "
    "account this that have has can why when what now"
).split()
GOLDEN_PER_LABEL = 100
STAGES = ["import", "label", "calibrate", "route", "export"]


def texts(n: int, seed: int = SEED) -> list[tuple[str, str, str]]:
    """``n`` (id, text, label) rows: 4-14 words, one to three of them from the label's topic."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(LABELS)
        words = rng.choices(COMMON, k=rng.randint(3, 11)) + rng.choices(TOPIC[label], k=rng.randint(1, 3))
        rng.shuffle(words)
        rows.append((f"t{i:07d}", " ".join(words).capitalize() + ".", label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, str, str]], *, gold: bool) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "text", "label"] if gold else ["id", "text"])
        out.writerows(rows if gold else ((i, t) for i, t, _ in rows))


# -- peak memory: this process and its descendants ---------------------------


def _tree_rss_mb(root: int) -> float:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21])  # pages
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """The largest resident memory of this process tree while the block runs."""

    def __enter__(self) -> PeakMemory:
        self.peak = _tree_rss_mb(os.getpid())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, _tree_rss_mb(os.getpid()))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_rss_mb(os.getpid()))


# -- floors -------------------------------------------------------------------


def sqlite_floor(rows: list[tuple[str, str, str]], folder: Path) -> float:
    """Rows/s of a bare SQLite executemany of (id, text), WAL, one transaction."""
    path = folder / "floor.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, text TEXT)")
    started = time.perf_counter()
    with db:
        db.executemany("INSERT INTO t VALUES (?, ?)", ((i, t) for i, t, _ in rows))
    seconds = time.perf_counter() - started
    db.close()
    path.unlink()
    return len(rows) / seconds


def encoder_floor(rows: list[tuple[str, str, str]], sample: int) -> float:
    """Texts/s of the bare encoder on (a sample of) the same texts."""
    from sentence_transformers import SentenceTransformer

    from duolabel.labelers.embedding import default_model_path

    model = SentenceTransformer(str(default_model_path()), device="cpu")
    chunk = [t for _, t, _ in rows[:sample]]
    model.encode(chunk[:64], batch_size=64)  # warm
    started = time.perf_counter()
    model.encode(chunk, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return len(chunk) / (time.perf_counter() - started)


# -- one run ------------------------------------------------------------------


def one_run(n: int, engine: str, data: Path, folder: Path) -> dict[str, dict[str, float]]:
    import duolabel

    labeler = {"backend": "embedding", "engine": engine}
    project = duolabel.init_project(folder / "proj", labels=LABELS, labeler=labeler)
    out: dict[str, dict[str, float]] = {}

    def stage(name: str, call: object) -> None:
        with PeakMemory() as memory:
            started = time.perf_counter()
            call()  # type: ignore[operator]
            seconds = time.perf_counter() - started
        out[name] = {"seconds": seconds, "rate": n / seconds, "peak_mb": memory.peak}
        print(
            f"  {name:<9} {seconds:8.1f} s  {n / seconds:9.0f} items/s  peak {memory.peak:7.0f} MB",
            flush=True,
        )

    def load() -> None:
        project.import_file(data / "golden.csv", role="golden", gold_column="label")
        project.import_file(data / f"items_{n}.csv")

    stage("import", load)
    if engine == "ray":
        import ray

        # Started apart (each run starts and stops its own), so that label times the work
        # and a local run's memory never counts an idle Ray left by an earlier run.
        stage("ray start", lambda: ray.init(include_dashboard=False, log_to_driver=False))
    stage("label", project.label)
    stage("calibrate", project.calibrate)
    stage("route", project.route)
    stage("export", lambda: project.export(folder / "labels.csv", include_pending=True))
    project.close()
    if engine == "ray":
        ray.shutdown()
    return out


def _spread(values: list[float], fmt: str) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:{fmt}} ± {std:{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


def table(n: int, engine: str, runs: list[dict], floors: dict[str, list[float]]) -> str:
    floor_of = {"import": "sqlite", "label": "encoder", "route": "sqlite", "export": "sqlite"}
    lines = [
        "| stage | seconds | items/s | peak memory (MB) | ratio to floor |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in [s for s in ["import", "ray start", *STAGES[1:]] if s in runs[0]]:
        seconds = [r[name]["seconds"] for r in runs]
        rates = [r[name]["rate"] for r in runs]
        peaks = [r[name]["peak_mb"] for r in runs]
        if name in floor_of:
            base = statistics.mean(floors[floor_of[name]])
            ratio = _spread([rate / base for rate in rates], ".3f") + f" of {floor_of[name]}"
        else:
            ratio = "—"
        lines.append(
            f"| {name} | {_spread(seconds, '.1f')} | {_spread(rates, ',.0f')} "
            f"| {_spread(peaks, ',.0f')} | {ratio} |"
        )
    total = [sum(stage["seconds"] for stage in r.values()) for r in runs]
    lines.append(f"| **total** | {_spread(total, '.1f')} | {_spread([n / t for t in total], ',.0f')} | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="items (besides 300 golden ones)")
    parser.add_argument("--engine", default="local", help="local, ray, or both: local,ray")
    parser.add_argument("--runs", type=int, default=3, help="runs per engine (mean ± std, min–max)")
    parser.add_argument("--encoder-sample", type=int, default=5000, help="texts the encoder floor encodes")
    parser.add_argument(
        "--data", type=Path, default=Path("/work/bench/scale"), help="where the CSVs are kept"
    )
    parser.add_argument("--record", action="store_true", help="write the sections of docs/benchmarks.md")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    rows = texts(args.n)
    if not (args.data / f"items_{args.n}.csv").exists():
        write_csv(args.data / f"items_{args.n}.csv", rows, gold=False)
    golden = texts(len(LABELS) * GOLDEN_PER_LABEL, seed=SEED + 1)
    golden = [(f"g{i}", t, label) for i, (_, t, label) in enumerate(golden)]
    write_csv(args.data / "golden.csv", golden, gold=True)
    engines = args.engine.split(",")
    results: dict[str, list[dict]] = {e: [] for e in engines}
    floors: dict[str, list[float]] = {"sqlite": [], "encoder": []}
    for run in range(args.runs):
        for engine in engines:
            folder = Path(tempfile.mkdtemp(prefix="scale-", dir=args.data))
            try:
                floors["sqlite"].append(sqlite_floor(rows, folder))
                print(f"run {run + 1}/{args.runs}, engine {engine}, n={args.n:,}", flush=True)
                results[engine].append(one_run(args.n, engine, args.data, folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        floors["encoder"].append(encoder_floor(rows, args.encoder_sample))
    where = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    floors_line = (
        f"Floors (mean ± std over {args.runs} runs): raw SQLite insert "
        f"{_spread(floors['sqlite'], ',.0f')} rows/s; "
        f"raw encoder {_spread(floors['encoder'], ',.0f')} texts/s "
        f"(a {min(args.encoder_sample, args.n):,}-text sample)."
    )
    for engine in engines:
        body = table(args.n, engine, results[engine], floors)
        print(f"\nn = {args.n:,}, engine {engine}, {args.runs} runs\n{body}\n{floors_line}")
        if args.record:
            record_section(
                f"Scale, n = {args.n:,}, engine {engine} (benchmarks/scale.py)",
                f"`python benchmarks/scale.py --n {args.n} --engine {args.engine} "
                f"--runs {args.runs} --record` "
                f"on {where}, {time.strftime('%Y-%m-%d')}; each figure is mean ± std (min–max) over "
                f"{args.runs} runs, a fresh project each. Peak memory is this process and every process "
                "under it (Ray's workers included).\n\n"
                f"{body}\n\n{floors_line}\n",
            )


if __name__ == "__main__":
    main()
