"""Web latency while a large import runs: does serving people stay fast during ``duolabel import``?

It builds a SQLite project with ``--items`` routed items plus controls and ``--annotators``
accounts (``build_project`` of benchmarks/load.py), writes a CSV of ``--rows`` items
(``generate`` of benchmarks/io.py, streaming), starts ``duolabel serve`` on a loopback port in
its own process, logs everyone in, then starts ``duolabel import`` of the CSV in another process
and lets the annotators (the client loop of benchmarks/load.py: ``GET /api/v1/task`` then
``POST /api/v1/answer``) work for exactly as long as the import runs. The import stages rows
in short transactions and publishes them in one ``INSERT ... SELECT``; the import process
here wraps that publish step to note when it began and how long it took, so the latency of
the requests answered while it ran is reported on its own too.

It prints p50/p95/p99 of next-task and submit during the whole import and during the
publish, the import's wall time, the publish transaction's duration, and whether the target
was met. Only 127.0.0.1 is contacted; the import is killed after ``--timeout`` seconds.

    python benchmarks/import_while_serving.py                                  # 1,000,000 rows, 50 annotators
    python benchmarks/import_while_serving.py --rows 50000 --annotators 5      # a quick look
    python benchmarks/import_while_serving.py --record                         # also write docs/benchmarks.md

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


def measure(args: argparse.Namespace, workdir: Path) -> dict:
    folder = workdir / "project"
    truth = load.build_project(
        folder, database_url=None, items=args.items, overlap=args.overlap, annotators=args.annotators
    )
    data = workdir / "items.csv"
    started = time.monotonic()
    bench_io().generate(args.rows, data, None)
    print(f"wrote {args.rows:,} rows in {time.monotonic() - started:.0f} s", file=sys.stderr)
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
    window: dict[str, int] = {}  # sample counts when the publish began and when the import ended
    try:
        base = f"http://127.0.0.1:{port}"
        load.wait_for(base, server)

        async def main() -> tuple[subprocess.Popen, float]:
            import httpx

            limits = httpx.Limits(max_connections=1)
            clients = [
                httpx.AsyncClient(base_url=base, timeout=60, limits=limits) for _ in range(args.annotators)
            ]
            try:
                headers = await asyncio.gather(
                    *(load.log_in(c, f"sim{i:02d}") for i, c in enumerate(clients))
                )
                start = time.monotonic()
                timed = [sys.executable, str(Path(__file__).resolve()), "--timed-import", str(marks)]
                importer = subprocess.Popen(
                    [*timed, "import", str(data), "-p", str(folder)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                deadline = start + args.timeout

                def going() -> bool:
                    return importer.poll() is None and time.monotonic() < deadline

                async def watch() -> None:
                    while going():
                        if "next" not in window and marks.exists():
                            window.update(next=len(stats.next_ms), submit=len(stats.submit_ms))
                        await asyncio.sleep(0.05)
                    window.update(next_end=len(stats.next_ms), submit_end=len(stats.submit_ms))

                await asyncio.gather(
                    watch(),
                    *(
                        load.work(c, h, going, truth, stats, seed=i)
                        for i, (c, h) in enumerate(zip(clients, headers, strict=True))
                    ),
                )
                return importer, time.monotonic() - start
            finally:
                for client in clients:
                    await client.aclose()

        importer, wall = asyncio.run(main())
    finally:
        server.send_signal(signal.SIGINT)
        _, errors = server.communicate(timeout=60)
    if importer.poll() is None:
        importer.kill()
        importer.communicate()
        raise SystemExit(f"the import did not finish within {args.timeout:g} s")
    printed, import_errors = importer.communicate()
    if importer.returncode:
        raise SystemExit(f"duolabel import failed ({importer.returncode}):\n{import_errors}")
    if "Traceback" in errors:
        print(errors, file=sys.stderr)
    timing = json.loads(marks.read_text())
    during_next = stats.next_ms[window.get("next", len(stats.next_ms)) : window["next_end"]]
    during_submit = stats.submit_ms[window.get("submit", len(stats.submit_ms)) : window["submit_end"]]
    return {
        "import_wall": wall,
        "import_said": printed.strip().splitlines()[-1].rpartition(": ")[2] if printed.strip() else "",
        "publish_seconds": timing.get("publish_seconds", float("nan")),
        "next": load.percentiles(stats.next_ms),
        "submit": load.percentiles(stats.submit_ms),
        "publish_next": load.percentiles(during_next),
        "publish_submit": load.percentiles(during_submit),
        "requests": len(stats.next_ms) + len(stats.submit_ms),
        "publish_requests": len(during_next) + len(during_submit),
        "answers": len(stats.acknowledged),
        "refused": dict(stats.refused),
        "empty": stats.empty,
        "server_tracebacks": errors.count("Traceback"),
    }


def report(r: dict, args: argparse.Namespace) -> str:
    def ms(values: tuple[float, float, float]) -> str:
        return " / ".join(f"{x:.0f}" for x in values)

    worst = max(r["next"][1], r["submit"][1])
    met = worst < TARGET_P95_MS
    lines = [
        f"`python benchmarks/import_while_serving.py --rows {args.rows} --annotators {args.annotators} "
        f"--items {args.items} --overlap {args.overlap}` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}. SQLite; server: one `duolabel serve` "
        "process; the import: one `duolabel import` process (CSV of benchmarks/io.py, its gold "
        "column kept as a field, as its labels are not the project's); clients: one asyncio process, "
        "JSON API, working for the whole import. All on the same machine.",
        "",
        "| while | requests | next-task p50 / p95 / p99 (ms) | submit p50 / p95 / p99 (ms) |",
        "|---|---|---|---|",
        f"| the whole import | {r['requests']:,} | {ms(r['next'])} | {ms(r['submit'])} |",
        f"| the publish (from its start to the import's end) | {r['publish_requests']:,} "
        f"| {ms(r['publish_next'])} | {ms(r['publish_submit'])} |",
        "",
        f"Import: {r['import_wall']:.1f} s wall ({args.rows / r['import_wall']:,.0f} rows/s; "
        f"`{r['import_said']}`); the publish transaction took {r['publish_seconds']:.2f} s. "
        f"Answers stored meanwhile: {r['answers']:,}; refused requests: {r['refused'] or 'none'}; "
        f"empty next-task answers: {r['empty']}; server tracebacks: {r['server_tracebacks']}.",
        "",
        f"Target p95 < {TARGET_P95_MS:.0f} ms for both (at 1,000,000 rows): "
        f"{'met' if met else 'NOT met'} at this size (worse p95 {worst:.0f} ms).",
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
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before the import is killed")
    parser.add_argument("--record", action="store_true", help="write the figures to docs/benchmarks.md")
    parser.add_argument("--note", default="", help="a line added under the figures (e.g. machine load)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="duolabel-import-serve-") as workdir:
        result = measure(args, Path(workdir))
    text = report(result, args) + (f"\n\n{args.note}" if args.note else "")
    print(text)
    if args.record:
        from _record import record_section

        record_section(HEADING, text)


if __name__ == "__main__":
    main()
