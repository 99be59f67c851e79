"""Import and export throughput and peak memory, CSV and Parquet.

Generates ``--items`` realistic items (id, a 10-40 word text from a fixed vocabulary, a
gold label on ~5% of rows) into a CSV and a Parquet file, streaming, then for each format
runs, each in a fresh Python process so that its peak RSS is its own:

* import:  ``duolabel.init_project`` + ``project.import_file(path, role="regular", gold_column="gold")``
* export:  ``project.export(out, include_pending=True)`` (no final labels exist yet, so every
  item is written as pending)

and does the same at ``--items / 10`` to show that peak memory does not grow with the file.

    python benchmarks/io.py                      # 1,000,000 items, CSV and Parquet
    python benchmarks/io.py --items 100000 --formats csv
    python benchmarks/io.py --repeat 3 --record  # median of 3 runs, written to docs/benchmarks.md

Targets: import >= 30,000 items/s; peak memory under 1 GB and independent of file size.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import random
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DOC = REPO / "docs" / "benchmarks.md"
HEADING = "## Import and export (benchmarks/io.py)"

LABELS = ["billing", "technical", "account"]
GOLD_SHARE = 0.05
SEED = 20240601
GEN_CHUNK = 50_000

TARGET_IMPORT_RATE = 30_000  # items/s
TARGET_PEAK_MB = 1024  # "under 1 GB"
# Peak memory counts as independent of file size when the full-size run's peak is within
# this many MB, or this fraction, of the tenth-size run's peak (whichever is larger).
SIZE_SLACK_MB = 64
SIZE_SLACK_FRACTION = 0.20

# A support-ticket flavoured vocabulary: common English words plus domain terms.
_VOCAB_TEXT = """
the a an and or but if then so because when while after before until since as of to in on at
by for with without from into over under about between through during against among per
i you he she it we they me him her us them my your his its our their this that these those
is are was were be been being have has had do does did can could will would should may might
must not no yes please thanks thank hello hi dear team support customer service help issue
problem question request order orders account accounts login password reset email address
phone number card credit debit payment payments invoice invoices bill billing charge charged
charges refund refunds money price plan plans subscription subscriptions upgrade downgrade
cancel cancelled renew renewal trial free premium basic monthly yearly annual fee fees tax
discount coupon code promo receipt statement balance transaction transactions bank transfer
app website page browser mobile desktop android iphone ios windows mac linux version update
updated install installed download error errors crash crashes crashed bug bugs slow fast
loading load timeout server servers connection network wifi offline online sync syncing data
file files upload uploaded export import settings profile username user users admin access
permission permissions locked unlock verify verification two factor security secure privacy
delete deleted remove removed add added change changed changes new old first last again still
already never always sometimes today yesterday tomorrow week month year hour hours minute
minutes day days time times since ago soon later now morning evening night weekend
working work works worked broken fix fixed fixing try tried trying see saw seen get got
make made send sent receive received open opened close closed click clicked screen button
message messages notification notifications shipping shipped delivery delivered parcel package
tracking address wrong right correct missing lost found damaged item items product products
quality size color return returns exchange replace replacement warranty store shop cart
checkout discount sale stock available unavailable confirm confirmed confirmation status
urgent asap quickly immediately waiting wait waited reply response respond responded call
called chat agent manager supervisor complaint feedback review rating happy unhappy angry
frustrated disappointed satisfied great good bad terrible awful excellent fine okay ok sorry
really very much many more most less least some any all every each other another same
different several few lot lots little big small long short high low double twice once
"""
VOCAB = _VOCAB_TEXT.split()


# ---------------------------------------------------------------------------
# Data generation (streaming: at most GEN_CHUNK rows in memory)


def _rows(n: int, seed: int = SEED):
    """Yield chunks of (id, text, gold) tuples; the first k rows are the same for every n >= k."""
    rng = random.Random(seed)
    choices, randint, rand, vocab = rng.choices, rng.randint, rng.random, VOCAB
    chunk: list[tuple[str, str, str | None]] = []
    for i in range(n):
        words = choices(vocab, k=randint(10, 40))
        words[0] = words[0].capitalize()
        text = " ".join(words) + "."
        gold = LABELS[randint(0, len(LABELS) - 1)] if rand() < GOLD_SHARE else None
        chunk.append((f"item-{i:08d}", text, gold))
        if len(chunk) >= GEN_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def generate(n: int, csv_path: Path | None, parquet_path: Path | None) -> None:
    """Write the same n items to a CSV and/or a Parquet file, one chunk at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("gold", pa.string())])
    handle = csv_path.open("w", encoding="utf-8", newline="") if csv_path else None
    writer = pq.ParquetWriter(parquet_path, schema) if parquet_path else None
    try:
        out = csv.writer(handle) if handle else None
        if out:
            out.writerow(["id", "text", "gold"])
        for chunk in _rows(n):
            if out:
                out.writerows((i, t, g or "") for i, t, g in chunk)
            if writer:
                ids, texts, golds = zip(*chunk, strict=True)
                writer.write_table(pa.table([list(ids), list(texts), list(golds)], schema=schema))
    finally:
        if handle:
            handle.close()
        if writer:
            writer.close()


# ---------------------------------------------------------------------------
# Child processes: one measurement each, peak RSS from getrusage in the child itself


def _peak_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def _hwm_mb() -> float | None:
    """This process's own RSS high-water mark (Linux VmHWM), a cross-check on ru_maxrss.

    Linux carries ru_maxrss over exec() from the process image it replaces (with vfork,
    the parent's), so a child's ru_maxrss is only its own while the parent stays small:
    that is why generation runs in a child too and the parent imports nothing heavy.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def child_import(folder: str, path: str) -> dict:
    import duolabel
    import duolabel.io  # loaded before the baseline, as import_file would

    if path.endswith(".parquet"):
        import pyarrow.parquet  # noqa: F401
    project = duolabel.init_project(folder, labels=LABELS)
    baseline = _peak_mb()
    start, cpu = time.perf_counter(), time.process_time()
    result = project.import_file(path, role="regular", gold_column="gold")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    project.close()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": result.rows,
        "added": result.added,
        "baseline_mb": baseline,
        "peak_mb": _peak_mb(),
        "hwm_mb": _hwm_mb(),
        "versions": _versions(),
    }


def child_export(folder: str, path: str) -> dict:
    import duolabel
    import duolabel.io

    if path.endswith(".parquet"):
        import pyarrow.parquet  # noqa: F401
    project = duolabel.Project.open(folder)
    baseline = _peak_mb()
    start, cpu = time.perf_counter(), time.process_time()
    rows = project.export(path, include_pending=True)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    project.close()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": rows,
        "baseline_mb": baseline,
        "peak_mb": _peak_mb(),
        "hwm_mb": _hwm_mb(),
        "versions": _versions(),
    }


def child_generate(n: str, csv_path: str, parquet_path: str) -> dict:
    start = time.perf_counter()
    generate(int(n), Path(csv_path) if csv_path else None, Path(parquet_path) if parquet_path else None)
    return {"seconds": time.perf_counter() - start, "peak_mb": _peak_mb()}


def _versions() -> str:
    import sqlite3

    import pyarrow
    import sqlalchemy

    return (
        f"SQLite {sqlite3.sqlite_version}, SQLAlchemy {sqlalchemy.__version__}, pyarrow {pyarrow.__version__}"
    )


def _progress(fmt: str, size: int, step: str, m: dict) -> None:
    print(
        f"  {fmt:8} {size:>10,} {step} {m['seconds']:7.1f} s {size / m['seconds']:>9,.0f} items/s "
        f"{size / m['cpu_seconds']:>9,.0f} items/CPU-s  peak {m['peak_mb']:6.0f} MB",
        file=sys.stderr,
        flush=True,
    )


def _summary(runs: list[dict]) -> dict:
    """The median run by wall-clock time, with the highest peak memory of all the runs."""
    ordered = sorted(runs, key=lambda m: m["seconds"])
    median = dict(ordered[(len(ordered) - 1) // 2])  # the lower median for an even count
    median["peak_mb"] = max(m["peak_mb"] for m in runs)
    median["all_seconds"] = [m["seconds"] for m in runs]
    return median


def run_child(kind: str, *args: object) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--child-{kind}", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{kind} {args} failed (exit {proc.returncode})")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line.removeprefix("RESULT "))
    hwm = result.get("hwm_mb")
    if hwm is not None and result["peak_mb"] - hwm > 16:
        print(
            f"warning: {kind} ru_maxrss {result['peak_mb']:.0f} MB but VmHWM {hwm:.0f} MB "
            "(inherited from the parent?)",
            file=sys.stderr,
        )
    return result


# ---------------------------------------------------------------------------
# Report


def machine(versions: str) -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(
            next(
                x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
            ).split()[1]
        )
        mem = f", {kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    cpu = f"{os.cpu_count()} cores" + (f" ({model})" if model else "")
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}{mem}, {system}, Python {platform.python_version()}, {versions}"


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds > 0 else "-"


def table(results: list[dict]) -> str:
    head = (
        "| format | items | import s | import items/s | import items/CPU-s | import peak MB "
        "| export s | export items/s | export items/CPU-s | export peak MB |"
    )
    lines = [head, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        cells = [r["format"], f"{r['items']:,}"]
        for step in ("import", "export"):
            m = r[step]
            cells += [
                f"{m['seconds']:.1f}",
                _rate(r["items"], m["seconds"]),
                _rate(r["items"], m["cpu_seconds"]),
                f"{m['peak_mb']:.0f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(results: list[dict], n: int) -> list[tuple[str, bool, str]]:
    full = [r for r in results if r["items"] == n]
    small = {r["format"]: r for r in results if r["items"] != n}
    out = []
    rates = {r["format"]: r["items"] / r["import"]["seconds"] for r in full}
    ok = all(v >= TARGET_IMPORT_RATE for v in rates.values())
    out.append(
        (
            f"Import ≥ {TARGET_IMPORT_RATE:,} items/s at {n:,} items",
            ok,
            ", ".join(f"{f}: {v:,.0f} items/s" for f, v in rates.items()),
        )
    )
    peaks = {
        f"{r['format']} {step} of {r['items']:,}": r[step]["peak_mb"]
        for r in results
        for step in ("import", "export")
    }
    top = max(peaks, key=peaks.get)
    ok = peaks[top] < TARGET_PEAK_MB
    out.append(("Peak memory under 1 GB (1,024 MB), every run", ok, f"highest: {top} at {peaks[top]:.0f} MB"))
    details, ok = [], True
    for r in full:
        s = small.get(r["format"])
        if s is None:
            continue
        for step in ("import", "export"):
            big, little = r[step]["peak_mb"], s[step]["peak_mb"]
            slack = max(SIZE_SLACK_MB, SIZE_SLACK_FRACTION * little)
            ok &= big - little <= slack
            details.append(f"{r['format']} {step}: {little:.0f} → {big:.0f} MB")
    if details:
        out.append(
            (
                f"Peak memory independent of file size ({small[next(iter(small))]['items']:,} → {n:,} "
                f"items: grows by at most {SIZE_SLACK_MB} MB or {SIZE_SLACK_FRACTION:.0%})",
                ok,
                "; ".join(details),
            )
        )
    return out


def _all_times(results: list[dict], repeat: int) -> str:
    times = "; ".join(
        f"{r['format']} {r['items']:,}: " + ", ".join(f"{x:.1f}" for x in r["import"]["all_seconds"]) + " s"
        for r in results
    )
    return f"Import times of the {repeat} runs: {times}."


def section(
    results: list[dict],
    n: int,
    command: str,
    gen_seconds: float,
    sizes: dict[str, int],
    load: str,
    repeat: int,
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    checks = verdicts(results, n)
    files = ", ".join(f"{k} {v / 1e6:,.0f} MB" for k, v in sizes.items())
    lines = [
        HEADING,
        "",
        "Streaming import of a CSV / Parquet file of items into a fresh SQLite project "
        '(`duolabel.init_project` + `project.import_file(path, role="regular", gold_column="gold")`), '
        "then export of every item (`project.export(out, include_pending=True)`: there are no final "
        "labels yet, so every row is written as pending) to the same format. Each import and each export "
        "runs in its own fresh Python process; *peak MB* is that process's peak RSS "
        "(`getrusage(RUSAGE_SELF).ru_maxrss`), interpreter and libraries included. "
        "Times cover the `import_file` / `export` call only: *items/s* is wall-clock (what the targets "
        "are about), *items/CPU-s* divides by the process's own CPU time, which other work on the "
        "machine slows down less."
        + (
            f" Each figure is the median of {repeat} runs (peak MB: the highest of them); "
            "all wall-clock import times are listed under the table."
            if repeat > 1
            else ""
        ),
        "",
        f"Items: `item-NNNNNNNN` ids, 10-40 words from a fixed {len(VOCAB)}-word vocabulary (seeded RNG), "
        f"a gold label from {LABELS} on ~{GOLD_SHARE:.0%} of rows, empty otherwise. "
        f"Input files at full size: {files}; generating them took {gen_seconds:.0f} s.",
        "",
        f"- Command: `{command}`",
        f"- Date: {when}",
        f"- Machine: {machine(results[0]['import']['versions'])}",
        f"- Load average (1/5/15 min) at the start and at the end of the run: {load} "
        "(other work on the machine slows the figures down)",
        "",
        table(results),
        "",
        *([_all_times(results, repeat), ""] if repeat > 1 else []),
        "Targets:",
        "",
    ]
    for name, ok, detail in checks:
        lines.append(f"- {name}: **{'PASS' if ok else 'MISS'}** ({detail})")
    return "\n".join(lines) + "\n"


def record(text: str) -> None:
    """Replace (or add) this script's section of docs/benchmarks.md, leaving the others alone."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from _record import record_section  # the helper every benchmarks/ script shares

    heading, _, body = text.partition("\n")
    record_section(heading.removeprefix("## "), body)


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="items in the full-size file")
    parser.add_argument("--formats", default="csv,parquet", help="comma-separated: csv, parquet")
    parser.add_argument("--out", type=Path, help="working folder (default: a temporary one, removed after)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each import and export; the table shows the median (default 1)",
    )
    parser.add_argument("--record", action="store_true", help="rewrite the IO section of docs/benchmarks.md")
    parser.add_argument("--child-import", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-export", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--child-generate", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat: expected 1 or more")

    for fn, child_args in (
        (child_import, args.child_import),
        (child_export, args.child_export),
        (child_generate, args.child_generate),
    ):
        if child_args:
            print("RESULT " + json.dumps(fn(*child_args)), flush=True)
            return 0

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("csv", "parquet")]
    if bad or not formats:
        parser.error(f"--formats: unknown {bad}; expected csv and/or parquet")
    n = args.items
    sizes_n = [n] + ([n // 10] if n // 10 > 0 else [])
    work = args.out or Path(tempfile.mkdtemp(prefix="duolabel-bench-io-"))
    work.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    sizes: dict[str, int] = {}
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    gen_seconds = 0.0
    try:
        for size in sizes_n:
            data = work / f"items-{size}"
            data.mkdir(exist_ok=True)
            paths = {f: data / f"items.{f}" for f in formats}
            print(f"generating {size:,} items into {data} ...", file=sys.stderr, flush=True)
            gen = run_child("generate", size, paths.get("csv", ""), paths.get("parquet", ""))
            if size == n:
                gen_seconds = gen["seconds"]
                sizes = {f: p.stat().st_size for f, p in paths.items()}
            for fmt in formats:
                runs: dict[str, list[dict]] = {"import": [], "export": []}
                for _ in range(args.repeat):
                    folder = data / f"project-{fmt}"
                    if folder.exists():
                        shutil.rmtree(folder)
                    imp = run_child("import", folder, paths[fmt])
                    if imp["added"] != size:
                        raise SystemExit(f"{fmt}: imported {imp['added']} items, expected {size}")
                    _progress(fmt, size, "import", imp)
                    exp = run_child("export", folder, data / f"export.{fmt}")
                    if exp["rows"] != size:
                        raise SystemExit(f"{fmt}: exported {exp['rows']} rows, expected {size}")
                    _progress(fmt, size, "export", exp)
                    runs["import"].append(imp)
                    runs["export"].append(exp)
                    shutil.rmtree(folder)  # the next run's files need the disk more than this does
                results.append(
                    {
                        "format": fmt,
                        "items": size,
                        **{step: _summary(measured) for step, measured in runs.items()},
                    }
                )
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)

    print(table(results))
    print()
    for name, ok, detail in verdicts(results, n):
        print(f"{'PASS' if ok else 'MISS'}  {name}: {detail}")
    if args.record:
        load += "; " + " / ".join(f"{x:.2f}" for x in os.getloadavg())
        command = "python benchmarks/io.py" + "".join(
            f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv)
        )
        record(section(results, n, command, gen_seconds, sizes, load, args.repeat))
        print(f"recorded in {DOC.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
