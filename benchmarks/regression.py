"""Quick regression check of every benchmark script: small sizes, fixed seeds, comparable output.

    python benchmarks/regression.py --out DIR            # run every benchmark, stdout to DIR/<name>.txt
    python benchmarks/regression.py --out DIR --only io load   # some of them
    python benchmarks/regression.py --compare BEFORE AFTER     # PASS / DIFF per script; exit 1 on a DIFF
    python benchmarks/regression.py --list               # the command line of each run

Each script in benchmarks/ runs once, in its own process (``sys.executable``, this
repository's ``src`` first on PYTHONPATH), one after the other, at sizes far below the
recorded ones but large enough to go through every code path of the script, and never with
``--record``. The seeds are the scripts' own (each draws from fixed seeds); the environment
pins what else could make two runs of the same code differ: ``PYTHONHASHSEED=0`` and one
BLAS/OpenMP/torch thread (a different thread count changes the order of float sums).

``--compare`` masks, in both outputs, only what measures the machine rather than the code
(see ``COMMON``, ``MASKS`` and ``TIMING_COLUMNS``): the date, the load average, the kernel
release and host name, wall/CPU times, items/s, peak MB, latency percentiles, speed-up and
throughput ratios and the PASS/MISS verdicts computed from them, and in load.py the counts that
depend on how far the clock got (all answers, idle polls, SystemRandom-drawn controls). It
compares everything else character for character: accuracies, calibration metrics, costs,
counts, thresholds, model versions, the invariants of the load test.

The LLM runs need llama-cpp-python (with its ``[server]`` extra) and the Gemma GGUF package;
load.py needs PostgreSQL (``initdb``/``pg_ctl``) and psycopg. A run that fails is reported
as FAILED, never as PASS.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
META = "_runs.json"
MASK = "<masked>"


@dataclass(frozen=True)
class Run:
    name: str
    script: str
    args: str
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 900.0


# The smallest sizes that still go through each script's code paths (each comment says which).
RUNS: list[Run] = [
    # No size options: crowds runs every aggregator and crowd-kit's on medrel and politifact_truth.
    Run("aggregation-crowds", "aggregation.py", "crowds"),
    # No size options: the embedding model, the golden draw, all/3/1 answers per item, both data sets.
    Run("aggregation-fusion", "aggregation.py", "fusion"),
    # Its size comes from AGG_BENCH_ITEMS ("smaller only for a trial run"): 1,000 items x 5 answers,
    # every aggregator and crowd-kit's counterpart in a fresh process, as at full size.
    Run("aggregation-scale", "aggregation.py", "scale --timeout 600", {"AGG_BENCH_ITEMS": "1000"}),
    # Three batches: the second routed by a model retrained on the people's labels, the third by
    # one retrained after a batch the model partly labelled; both targets: 0.9 (nothing
    # certified, all to people) and 0.7 (the human share moves).
    Run(
        "batch_loop",
        "batch_loop.py",
        "--batches 3 --batch-size 150 --golden 300 --error 0.15 --targets 0.9,0.7",
    ),
    # Both formats, at the full size and the tenth size (the memory-vs-size check), one repeat.
    Run("io", "io.py", "--items 2000 --formats csv,parquet --repeat 1"),
    # No size options: throughput on the emotion validation split, quality on amazon_isbook and emotion.
    Run("labelers", "labelers.py", ""),
    # One golden draw on the three crowds (simulation), three splits on three data sets (validity).
    Run("routing", "routing.py", "--draws 1 --splits 3"),
    # Both stores; few items, so that every item is finished well before the deadline.
    Run("load", "load.py", "--annotators 8 --seconds 25 --items 40 --overlap 3 --stores sqlite postgresql"),
    Run("llama_scoring", "llama_scoring.py", "--items 4 --chars 300 --threads 1"),
    # The openai labeler sends 2 requests at once, so the order in which llama_cpp.server evaluates
    # the prompts varies, and with it how much of the previous prompt is reused from the KV cache
    # and so how the rest is batched, which moves the logits. With one token per eval
    # (N_BATCH/N_UBATCH, read from the environment by the server's settings) the logits no longer
    # depend on the previous prompt. LlamaLabeler, in-process, does not read these variables.
    Run(
        "llm_quality",
        "llm_quality.py",
        "--golden 6 --measured 6 --openai-golden 5 --openai-measured 2",
        {"N_BATCH": "1", "N_UBATCH": "1"},
    ),
]

# Pinned for every run: string hashing, and one thread for BLAS / OpenMP / torch / tokenizers.
PINNED_ENV = {
    "PYTHONHASHSEED": "0",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


# ---------------------------------------------------------------------------
# Masking

# Columns of the scripts' markdown tables that are timings, throughput or memory: their
# cells are masked, in every row of a table with that header (and in the rows a script
# prints as it goes, before the header: matched by their number of cells).
TIMING_COLUMNS: dict[str, set[str]] = {
    # "ratio" is crowd-kit's runtime over ours
    "aggregation-crowds": {"ours s", "crowd-kit s", "ratio"},
    "aggregation-scale": {"s", "peak MB", "+MB", "crowd-kit s / ours s", "crowd-kit peak MB / ours"},
    "io": {
        f"{step} {what}"
        for step in ("import", "export")
        for what in ("s", "items/s", "items/CPU-s", "peak MB")
    },
    # "ratio" is encoder time over labeler time
    "labelers": {"raw encoder items/s", "`embedding` labeler items/s", "ratio"},
    # "answers" counts what was answered before the clock ran out, controls included (drawn
    # with SystemRandom); the regular answers, the finished items and the invariants stay.
    "load": {"answers/s", "next-task p50 / p95 / p99 (ms)", "submit p50 / p95 / p99 (ms)", "answers"},
    "llama_scoring": {"seconds", "items/s", "CPU-s", "items/CPU-s"},
    "llm_quality": {"items/s"},
}

Sub = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]


def _sub(pattern: str, repl: str | Callable[[re.Match[str]], str]) -> Sub:
    return re.compile(pattern), repl


def _decimals(m: re.Match[str]) -> str:
    return m.group(1) + re.sub(r"\d+\.\d+", MASK, m.group(2))


def _kinds(m: re.Match[str]) -> str:
    entries = sorted(re.sub(r"^('control'): \d+$", rf"\1: {MASK}", e.strip()) for e in m.group(1).split(","))
    return "answers by kind: {" + ", ".join(entries) + "}"


# Line rules for every output: the date, the load average, the run's wall time.
COMMON: list[Sub] = [
    _sub(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?(?: UTC)?", "<date>"),
    _sub(r"(?i)(load average)(.*)$", _decimals),  # load averages are printed with 2 decimals
    _sub(r"Run time \d+ s", f"Run time {MASK} s"),
    _sub(r"\bLinux \d[^\s,;]*", f"Linux {MASK}"),  # the kernel release (machine lines)
]

# Line rules of one script, for timings printed outside a table.
MASKS: dict[str, list[Sub]] = {
    "io": [
        # the verdict of each target (import rate, peak memory, memory vs size) is a timing/memory one
        _sub(r"^(PASS|MISS)  ", f"{MASK}  "),
        _sub(r"\b(csv|parquet): [\d,]+ items/s", rf"\1: {MASK} items/s"),
        _sub(r"highest: .* at \d+ MB", f"highest: {MASK}"),
        _sub(r"\b(csv|parquet) (import|export): \d+ → \d+ MB", rf"\1 \2: {MASK} → {MASK} MB"),
    ],
    "labelers": [
        _sub(
            r"encoder \d+ items/s, embedding labeler \d+ items/s, ratio [\d.]+",
            f"encoder {MASK} items/s, embedding labeler {MASK} items/s, ratio {MASK}",
        ),
        # the throughput target's verdict (the ratio >= 0.8); the threshold stays
        _sub(r"(\| ≥ 0\.8: )(PASS|MISS)( \|)", rf"\1{MASK}\3"),
    ],
    "load": [
        # the host name (platform.node()) in the header line
        _sub(r"^(`python benchmarks/load\.py [^`]*`) on .+? \((\d+ cores)\)", rf"\1 on {MASK} (\2)"),
        # idle polls after the last item was finished, until the clock ran out
        _sub(r"empty next-task answers: \d+", f"empty next-task answers: {MASK}"),
        # controls are drawn with SystemRandom; the store lists the kinds in no set order
        _sub(r"answers by kind: \{([^}]*)\}", _kinds),
    ],
    "llama_scoring": [
        _sub(r"scoring [\d.]+ s, naive [\d.]+ s", f"scoring {MASK} s, naive {MASK} s"),
        _sub(r"Speed-up \(items/s\): \*\*[\d.]+x\*\*", f"Speed-up (items/s): **{MASK}x**"),
        _sub(r"(target >= \d+x: )\*\*(PASS|MISS)\*\*", rf"\1**{MASK}**"),
    ],
    "llm_quality": [
        _sub(r"'items_s': [^,}]+", f"'items_s': {MASK}"),
    ],
}

_SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")
# Only figures are masked: a "—" or "> 600 (stopped)" where a figure was is still a difference.
_NUMBER = re.compile(r"^[\d.,+\-]+(?:\s*/\s*[\d.,+\-]+)*$")


def _cells(line: str) -> list[str] | None:
    text = line.strip()
    if len(text) < 2 or not (text.startswith("|") and text.endswith("|")):
        return None
    return [c.strip() for c in text[1:-1].split("|")]


def _mask_tables(lines: list[str], columns: set[str]) -> list[str]:
    if not columns:
        return lines
    headers: dict[int, tuple[int, set[int]]] = {}  # header line -> (cells, masked indices)
    by_width: dict[int, set[int]] = {}
    for i in range(len(lines) - 1):
        cells = _cells(lines[i])
        if cells is not None and _SEPARATOR.match(lines[i + 1].strip()):
            masked = {k for k, c in enumerate(cells) if c in columns}
            headers[i] = (len(cells), masked)
            if by_width.get(len(cells), masked) != masked:
                raise ValueError(f"two tables of {len(cells)} columns mask different columns")
            by_width[len(cells)] = masked
    out = []
    current: tuple[int, set[int]] | None = None
    for i, line in enumerate(lines):
        if i in headers:
            current = headers[i]
            out.append(line)
            continue
        cells = _cells(line)
        if cells is None:
            current = None  # a table ends at its first non-row line
            out.append(line)
            continue
        if _SEPARATOR.match(line.strip()):
            out.append(line)
            continue
        if current is not None and current[0] == len(cells):
            masked = current[1]
        else:
            masked = by_width.get(len(cells), set())
        if masked:
            cells = [MASK if k in masked and _NUMBER.match(c) else c for k, c in enumerate(cells)]
            line = "| " + " | ".join(cells) + " |"
        out.append(line)
    return out


def mask(name: str, text: str) -> list[str]:
    """The output of run ``name`` with its timing/throughput/memory figures masked."""
    lines = _mask_tables(text.splitlines(), TIMING_COLUMNS.get(name, set()))
    rules = COMMON + MASKS.get(name, [])
    out = []
    for line in lines:
        for pattern, repl in rules:
            line = pattern.sub(repl, line)
        out.append(line)
    return out


# ---------------------------------------------------------------------------
# Running


def command(run: Run) -> list[str]:
    return [sys.executable, str(HERE / run.script), *run.args.split()]


def shown(run: Run) -> str:
    env = " ".join(f"{k}={v}" for k, v in run.env.items())
    return (env + " " if env else "") + " ".join(["python", f"benchmarks/{run.script}", *run.args.split()])


def run_all(out: Path, only: list[str] | None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    env = dict(os.environ)
    env.update(PINNED_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    failed = 0
    total = time.perf_counter()
    for run in RUNS:
        if only and run.name not in only:
            continue
        print(f"{run.name}: {shown(run)}", flush=True)
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                command(run),
                cwd=REPO,
                env={**env, **run.env},
                capture_output=True,
                text=True,
                timeout=run.timeout,
                check=False,
            )
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc = "timeout"
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        seconds = time.perf_counter() - started
        (out / f"{run.name}.txt").write_text(stdout, encoding="utf-8")
        (out / f"{run.name}.stderr.txt").write_text(stderr, encoding="utf-8")
        meta[run.name] = {"command": shown(run), "rc": rc, "seconds": round(seconds, 1)}
        meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"  {status} in {seconds:.0f} s", flush=True)
        if rc != 0:
            failed += 1
            print("  " + "\n  ".join(stderr.strip().splitlines()[-15:]), flush=True)
    print(f"total {time.perf_counter() - total:.0f} s; outputs in {out}", flush=True)
    return 1 if failed else 0


# ---------------------------------------------------------------------------
# Comparing


def compare(before: Path, after: Path, context: int, max_lines: int) -> int:
    names = [r.name for r in RUNS]
    meta = {}
    for side in (before, after):
        path = side / META
        meta[side] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    results: list[tuple[str, str]] = []
    for name in names:
        files = [side / f"{name}.txt" for side in (before, after)]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            results.append((name, f"MISSING ({', '.join(missing)})"))
            continue
        rcs = [meta[side].get(name, {}).get("rc") for side in (before, after)]
        if any(rc != 0 for rc in rcs):
            results.append((name, f"FAILED (exit code before {rcs[0]}, after {rcs[1]})"))
            continue
        a, b = (mask(name, f.read_text(encoding="utf-8")) for f in files)
        if not a:
            results.append((name, "EMPTY"))
            continue
        if a == b:
            results.append((name, "PASS"))
            continue
        diff = list(
            difflib.unified_diff(a, b, fromfile=str(files[0]), tofile=str(files[1]), n=context, lineterm="")
        )
        changed = sum(1 for d in diff if d[:1] in "+-" and d[:3] not in ("+++", "---"))
        results.append((name, f"DIFF ({changed} lines)"))
        print(f"===== {name}: masked outputs differ")
        print("\n".join(diff[:max_lines]))
        if len(diff) > max_lines:
            print(f"... {len(diff) - max_lines} more diff lines")
    print()
    width = max(len(n) for n, _ in results)
    for name, verdict in results:
        times = " / ".join(f"{meta[side].get(name, {}).get('seconds', '?')} s" for side in (before, after))
        print(f"{name:<{width}}  {verdict}   (run time before / after: {times})")
    ok = all(v == "PASS" for _, v in results)
    print("\n" + ("all PASS" if ok else "DIFFERENCES FOUND"))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="run the benchmarks, writing their output here")
    parser.add_argument("--only", nargs="+", choices=[r.name for r in RUNS], help="only these runs")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--context", type=int, default=1, help="(compare) diff context lines")
    parser.add_argument("--max-lines", type=int, default=200, help="(compare) diff lines shown per run")
    parser.add_argument("--list", action="store_true", help="print each run's command line")
    parser.add_argument("--show-masked", nargs=2, metavar=("NAME", "FILE"), help="print FILE as masked")
    args = parser.parse_args(argv)
    if args.list:
        for run in RUNS:
            print(f"{run.name}: {shown(run)}")
        return 0
    if args.show_masked:
        name, path = args.show_masked
        print("\n".join(mask(name, Path(path).read_text(encoding="utf-8"))))
        return 0
    if args.compare:
        return compare(*args.compare, context=args.context, max_lines=args.max_lines)
    if args.out:
        return run_all(args.out, args.only)
    parser.error("give --out DIR, --compare BEFORE AFTER or --list")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
