"""CSV import speed, this tree against another (``--before``), in CPU time as well as wall time.

``duolabel import`` of ``--items`` generated rows (the rows of benchmarks/io.py: 10-40 words,
5% with a gold label) into a fresh SQLite project, ``--runs`` times per tree, each in a fresh
process, the trees taking turns so that a busy machine slows both alike. The CPU time of the
importing process is the figure that a shared machine disturbs least; wall time is given too.

    python benchmarks/import_speed.py --items 200000 --runs 5
    python benchmarks/import_speed.py --before /tmp/old/src --record
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _record import record_section  # noqa: E402

CHILD = """
import json, sys, time
import duolabel
project = duolabel.init_project(sys.argv[1], labels=["billing", "technical", "account"])
wall, cpu = time.perf_counter(), time.process_time()
result = project.import_file(sys.argv[2], role="regular", gold_column="gold")
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"wall": wall, "cpu": cpu, "added": result.added}))
"""


def one(src: Path, csv_path: Path, work: Path) -> dict:
    folder = Path(tempfile.mkdtemp(dir=work))
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder / "p"), str(csv_path)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):,.0f} ± {std:,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another tree's src/ folder to compare with")
    parser.add_argument("--work", type=Path, default=Path("/work/bench/import_speed"))
    parser.add_argument("--record", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    csv_path = args.work / f"items_{args.items}.csv"
    if not csv_path.exists():
        import runpy

        # benchmarks/io.py's rows (its module name would shadow the standard library's io)
        runpy.run_path(str(HERE / "io.py"))["generate"](args.items, csv_path, None)
    trees = {"this tree": HERE.parent / "src"}
    if args.before:
        trees = {"before": args.before, **trees}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    load_before = f"{os.getloadavg()[0]:.1f}"
    for run in range(args.runs):
        for name, src in trees.items():
            found = one(src, csv_path, args.work)
            results[name].append(found)
            print(f"run {run + 1} {name}: wall {found['wall']:.2f} s, cpu {found['cpu']:.2f} s", flush=True)
    lines = ["| tree | items/s of CPU time | items/s of wall time |", "| --- | --- | --- |"]
    for name, runs in results.items():
        cpu = [args.items / r["cpu"] for r in runs]
        wall = [args.items / r["wall"] for r in runs]
        lines.append(f"| {name} | {spread(cpu)} | {spread(wall)} |")
    body = "\n".join(lines)
    load_after = f"{os.getloadavg()[0]:.1f}"
    print(body)
    if args.record:
        record_section(
            "CSV import speed (benchmarks/import_speed.py)",
            f"`python benchmarks/import_speed.py --items {args.items} --runs {args.runs}"
            f"{' --before OLD/src' if args.before else ''} --record`: {args.items:,} rows into a fresh "
            f"SQLite project, mean ± std (min–max) over {args.runs} runs per tree, taking turns, on a "
            f"{os.cpu_count()}-CPU machine, load average {load_before} before and {load_after} after "
            "(wall time follows the machine's load; the CPU time of the importing process is the "
            "steadier figure).\n\n" + body,
        )


if __name__ == "__main__":
    main()
