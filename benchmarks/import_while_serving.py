"""Web latency while a large import runs: does serving people stay fast during ``duolabel import``?

It builds a SQLite project with ``--items`` routed items plus controls and ``--annotators``
accounts (``build_project`` of benchmarks/load.py), writes a CSV of ``--rows`` items
(``generate`` of benchmarks/io.py, streaming), starts ``duolabel serve`` on a loopback port in
its own process and logs everyone in. The annotators (the client loop of benchmarks/load.py:
``GET /api/v1/task`` then ``POST /api/v1/answer``, with ``--think-ms`` of mean think time)
work ``--baseline`` seconds, then ``duolabel import`` of the CSV starts in another process and
they work for exactly as long as it runs. The import stages rows in short transactions and
then publishes them (``INSERT ... SELECT``, a range of rows per transaction); the import
process here wraps that publish step to note when it began and how long it took, so the
latency of the requests answered while it ran is reported on its own too.

It prints p50/p95/p99 of next-task and submit before the import, during the whole import
and during the publish, the import's wall time, the publish step's duration, and whether the
target was met, each over ``--runs`` runs (a fresh project, server and crowd each; the same
file). Only 127.0.0.1 is contacted; the import is killed after ``--timeout`` seconds.

    python benchmarks/import_while_serving.py                                  # 1,000,000 rows, 50 annotators
    python benchmarks/import_while_serving.py --rows 50000 --annotators 5 --runs 1   # a quick look
    python benchmarks/import_while_serving.py --think-ms 2000 --record         # also write docs/benchmarks.md

Target: p95 of next-task and of submit under 300 ms on SQLite during a 1,000,000-row import.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import load  # noqa: E402  (benchmarks/load.py, next to this file)

HEADING = "Web latency during an import (benchmarks/import_while_serving.py)"
TARGET_P95_MS = 300.0
SECRET = "import-bench-secret-0123456789"


def bench_io():
    """benchmarks/io.py, loaded by path: its name would otherwise be the standard library's io."""
    spec = importlib.util.spec_from_file_location("benchmarks_io", HERE / "io.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def duolabel_command(*argv: str) -> list[str]:
    return [sys.executable, "-c", "from duolabel.cli import main; main()", *argv]


# -- inside the import process: timing the publish --------------------------------------------


def timed_import(marks: Path, argv: list[str]) -> None:
    """Run ``duolabel <argv>`` with the publish step wrapped: its start (wall clock) and
    duration are written to ``marks`` as JSON, the start as soon as it begins."""
    import duolabel.io as io_module

    publish = io_module._publish

    def wrapped(*args, **kwargs):
        start = time.time()
        marks.write_text(json.dumps({"publish_start": start}))
        try:
            return publish(*args, **kwargs)
        finally:
            marks.write_text(json.dumps({"publish_start": start, "publish_seconds": time.time() - start}))

    io_module._publish = wrapped
    from duolabel.cli import main as cli_main

    sys.argv = ["duolabel", *argv]
    cli_main()


# -- the measurement ---------------------------------------------------------------------------


def measure(args: argparse.Namespace, workdir: Path, data: Path) -> dict:
    """One run: a fresh project and server; the crowd works ``--baseline`` seconds, then the
    import of ``data`` starts and the crowd works until it ends."""
    folder = workdir / "project"
    truth = load.build_project(
        folder, database_url=None, items=args.items, overlap=args.overlap, annotators=args.annotators
    )
    marks = workdir / "publish.json"
    port = load.free_port()
    server = subprocess.Popen(
        duolabel_command("serve", str(folder), "--host", "127.0.0.1", "--port", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DUOLABEL_SECRET": SECRET},
    )
    stats = load.Stats()
    # sample counts (next-task, submit) when the import began, when its publish began, at its end
    window: dict[str, tuple[int, int]] = {}
    state: dict = {}
    try:
        base = f"http://127.0.0.1:{port}"
        load.wait_for(base, server)

        def counts() -> tuple[int, int]:
            return len(stats.next_ms), len(stats.submit_ms)

        def going() -> bool:
            importer = state.get("importer")
            return importer is None or (importer.poll() is None and time.monotonic() < state["deadline"])

        async def conduct() -> None:
            await asyncio.sleep(args.baseline)
            window["start"] = counts()
            state["started"] = time.monotonic()
            state["deadline"] = state["started"] + args.timeout
            timed = [sys.executable, str(Path(__file__).resolve()), "--timed-import", str(marks)]
            state["importer"] = subprocess.Popen(
                [*timed, "import", str(data), "-p", str(folder)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            while going():
                if "publish" not in window and marks.exists():
                    window["publish"] = counts()
                await asyncio.sleep(0.05)
            window["end"] = counts()
            state["wall"] = time.monotonic() - state["started"]

        async def main() -> None:
            import httpx

            limits = httpx.Limits(max_connections=1)
            clients = [
                httpx.AsyncClient(base_url=base, timeout=60, limits=limits) for _ in range(args.annotators)
            ]
            try:
                gate = asyncio.Semaphore(8)  # a few logins at a time (load.log_in says why)
                headers = await asyncio.gather(
                    *(load.log_in(c, f"sim{i:02d}", gate) for i, c in enumerate(clients))
                )
                await asyncio.gather(
                    conduct(),
                    *(
                        load.work(c, h, going, truth, stats, seed=i, think_ms=args.think_ms)
                        for i, (c, h) in enumerate(zip(clients, headers, strict=True))
                    ),
                )
            finally:
                for client in clients:
                    await client.aclose()

        asyncio.run(main())
    finally:
        server.send_signal(signal.SIGINT)
        _, errors = server.communicate(timeout=60)
        importer = state.get("importer")
        if importer is not None and importer.poll() is None:
            importer.kill()
            importer.communicate()
            raise SystemExit(f"the import did not finish within {args.timeout:g} s")
    printed, import_errors = importer.communicate()
    if importer.returncode:
        raise SystemExit(f"duolabel import failed ({importer.returncode}):\n{import_errors}")
    if "Traceback" in errors:
        print(errors, file=sys.stderr)
    timing = json.loads(marks.read_text())

    def between(first: str, last: str) -> dict:
        a, b = window.get(first, window["end"]), window[last]
        return {
            "next": load.percentiles(stats.next_ms[a[0] : b[0]]),
            "submit": load.percentiles(stats.submit_ms[a[1] : b[1]]),
            "requests": b[0] - a[0] + b[1] - a[1],
        }

    window["begin"] = (0, 0)
    return {
        "before": between("begin", "start"),
        "import": between("start", "end"),
        "publish": between("publish", "end"),
        "import_wall": state["wall"],
        "import_said": printed.strip().splitlines()[-1].rpartition(": ")[2] if printed.strip() else "",
        "publish_seconds": timing.get("publish_seconds", float("nan")),
        "answers": len(stats.acknowledged),
        "refused": dict(stats.refused),
        "empty": stats.empty,
        "server_tracebacks": errors.count("Traceback"),
    }


WINDOWS = {
    "before": "before the import ({baseline:g} s)",
    "import": "the whole import",
    "publish": "the publish (its start to the import's end)",
}


def report(results: list[dict], args: argparse.Namespace) -> str:
    spread = load.spread
    crowd = f"think {args.think_ms:g} ms" if args.think_ms > 0 else "closed loop"
    lines = [
        f"`python benchmarks/import_while_serving.py --rows {args.rows} --annotators {args.annotators} "
        f"--think-ms {args.think_ms:g} --baseline {args.baseline:g} --items {args.items} "
        f"--overlap {args.overlap} --runs {args.runs}` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores), {time.strftime('%Y-%m-%d %H:%M')} UTC. SQLite; server: one "
        "`duolabel serve` process; the import: one `duolabel import` process (CSV of "
        "benchmarks/io.py, its gold column kept as a field, as its labels are not the project's); "
        f"clients: one asyncio process, JSON API, {args.annotators} annotators ({crowd}), working "
        f"{args.baseline:g} s before the import and then until it ends. All on the same machine. "
        f"Each figure is the mean ± std (min–max) over {len(results)} run(s), each a fresh project, "
        "server and crowd (the same file).",
        "",
        "| while | requests | next-task p50 | next-task p95 | next-task p99 | submit p50 | submit p95 "
        "| submit p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, name in WINDOWS.items():
        cells = [spread([r[key]["requests"] for r in results])]
        for kind in ("next", "submit"):
            cells += [spread([r[key][kind][q] for r in results]) for q in range(3)]
        lines.append(f"| {name.format(baseline=args.baseline)} | {' | '.join(cells)} |")
    refused: dict[str, int] = {}
    for r in results:
        for reason, n in r["refused"].items():
            refused[reason] = refused.get(reason, 0) + n
    walls = [r["import_wall"] for r in results]
    worst = max(max(r["import"]["next"][1], r["import"]["submit"][1]) for r in results)
    lines += [
        "",
        f"Latencies in ms. Import: {spread(walls, 1)} s wall "
        f"({spread([args.rows / w for w in walls])} rows/s; "
        f"the last run said `{results[-1]['import_said']}`); "
        f"the publish step took {spread([r['publish_seconds'] for r in results], 2)} s. "
        f"Answers stored meanwhile: {sum(r['answers'] for r in results):,} in all; refused requests: "
        f"{refused or 'none'}; empty next-task answers: {sum(r['empty'] for r in results)}; server "
        f"tracebacks: {sum(r['server_tracebacks'] for r in results)}.",
        "",
        f"Target p95 < {TARGET_P95_MS:.0f} ms for both during a 1,000,000-row import: "
        f"{'met' if worst < TARGET_P95_MS else 'NOT met'} in the worst run at {args.rows:,} rows "
        f"(its worse p95 during the import: {worst:.0f} ms).",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--timed-import":
        timed_import(Path(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="items in the imported file")
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--items", type=int, default=20_000, help="routed items already in the project")
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument(
        "--think-ms", type=float, default=0.0, help="mean think time per task (0: a closed loop)"
    )
    parser.add_argument(
        "--baseline", type=float, default=20.0, help="seconds the crowd works before the import starts"
    )
    parser.add_argument("--runs", type=int, default=5, help="repeat the measurement N times")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before the import is killed")
    parser.add_argument("--record", action="store_true", help="write the figures to docs/benchmarks.md")
    parser.add_argument("--note", default="", help="a line added under the figures (e.g. machine load)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="duolabel-import-serve-") as workdir:
        data = Path(workdir) / "items.csv"
        started = time.monotonic()
        bench_io().generate(args.rows, data, None)
        print(f"wrote {args.rows:,} rows in {time.monotonic() - started:.0f} s", file=sys.stderr)
        for run in range(args.runs):
            print(f"run {run + 1}/{args.runs} ...", file=sys.stderr, flush=True)
            (Path(workdir) / f"run{run}").mkdir()
            results.append(measure(args, Path(workdir) / f"run{run}", data))
            worst = max(results[-1]["import"]["next"][1], results[-1]["import"]["submit"][1])
            print(f"  import {results[-1]['import_wall']:.1f} s, worse p95 {worst:.0f} ms", file=sys.stderr)
    text = report(results, args) + (f"\n\n{args.note}" if args.note else "")
    print(text)
    if args.record:
        from _record import record_section

        record_section(HEADING, text)


if __name__ == "__main__":
    main()
