"""Throughput of the ``openai`` labeler over a fleet of llama_cpp.server processes on loopback.

    python benchmarks/fleet.py [--items 60] [--runs 3] [--concurrency 2] [--record]

Three set-ups, each run ``--runs`` times, interleaved (one run of each, then again) so that
a change in the machine's load hits all three alike:

* ``1 server``: ``base_url`` is one server;
* ``2 servers``: ``base_url`` lists two servers of the same model;
* ``2 servers, one killed``: the same, and the second server is SIGKILLed once a third of
  the items are labelled; its request in flight is retried on the first.

Items: ``--items`` emotion validation items drawn with a fixed seed; 2 golden examples from
the train split; ``few_shot`` 2 without an encoder, so every prompt shares its prefix
(instructions, labels, examples) and only the item differs. No response cache: every item
is one request. Each server is warmed up with one request before the clock starts, and a
killed server is started again between runs, off the clock.

Both servers run on the same machine: with 2 cores, two servers share the same CPUs, so the
second one is not expected to double throughput here; on separate machines (or GPUs) it
would. The figures say whether dispatch, failover and retry cost anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "emotion"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _record import record_section  # noqa: E402

from duolabel.labelers import TextItem  # noqa: E402
from duolabel.labelers.openai import OpenAILabeler  # noqa: E402

SEED = 0
SETUPS = ("1 server", "2 servers", "2 servers, one killed")


def load_items(n: int) -> tuple[list[TextItem], list[str], list[TextItem], list[str], dict]:
    rows = [json.loads(line) for line in (DATA / "items.jsonl").open(encoding="utf-8")]
    task = json.loads((DATA / "labels.json").read_text(encoding="utf-8"))
    rng = np.random.default_rng(SEED)
    valid = [r for r in rows if r["split"] == "validation"]
    train = [r for r in rows if r["split"] == "train"]
    picked = [valid[i] for i in rng.choice(len(valid), size=n, replace=False)]
    golden = [train[i] for i in rng.choice(len(train), size=2, replace=False)]
    return (
        [TextItem(r["id"], r["text"], r["id"]) for r in picked],
        [r["gold"] for r in picked],
        [TextItem(r["id"], r["text"], r["id"]) for r in golden],
        [r["gold"] for r in golden],
        task,
    )


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight per server")
    parser.add_argument("--record", action="store_true", help="rewrite this section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/fleet.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))

    from tests.llm_server import MODEL_ALIAS, LlamaServer, gguf_path

    # A SIGTERM (timeout, kill) still runs the finally below: no server is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    items, gold, golden, golden_gold, task = load_items(args.items)
    load_at_start = load_average()
    servers = [LlamaServer(gguf_path(), n_ctx=1024) for _ in range(2)]

    def labeler(urls: list[str]) -> OpenAILabeler:
        return OpenAILabeler(
            labels=task["labels"],
            instructions=task["instruction"],
            model=MODEL_ALIAS,
            base_url=urls[0] if len(urls) == 1 else urls,
            few_shot=2,
            answer_tokens=1,
            concurrency=args.concurrency,
            timeout=60.0,
            max_retries=2,
            backoff=0.2,
        ).fit(golden, golden_gold)

    rates: dict[str, list[float]] = {name: [] for name in SETUPS}
    notes: dict[str, list[str]] = {name: [] for name in SETUPS}
    accuracy: dict[str, list[float]] = {name: [] for name in SETUPS}
    exact = True  # every item labelled, by exactly one request
    try:
        for server in servers:
            server.start()
            labeler([server.base_url]).predict_proba(golden[:1])  # warm-up, off the clock
        for run in range(args.runs):
            for name in SETUPS:
                urls = [s.base_url for s in (servers[:1] if name == "1 server" else servers)]
                lab = labeler(urls)
                done = 0

                def kill_at_a_third(n: int, name: str = name) -> None:
                    nonlocal done
                    done += n
                    if name.endswith("killed") and done == len(items) // 3:
                        servers[1].kill()

                started = time.perf_counter()
                probs, usage = lab.predict_proba(items, progress=kill_at_a_third)
                seconds = time.perf_counter() - started
                rates[name].append(len(items) / seconds)
                exact &= len(probs) == len(items) and int(usage.extra["requests"]) == len(items)
                decided = [
                    task["labels"][int(np.argmax(p))] if not np.isnan(p).any() else None for p in probs
                ]
                accuracy[name].append(float(np.mean([d == g for d, g in zip(decided, gold, strict=True)])))
                share = "/".join(str(s.answered) for s in lab.fleet_.servers)
                notes[name].append(f"{int(usage.extra['requests'])} requests ({share})")
                print(
                    f"run {run + 1} {name}: {seconds:.1f} s, {len(items) / seconds:.3f} items/s, "
                    f"requests {int(usage.extra['requests'])} ({share}), load {load_average()}",
                    file=sys.stderr,
                    flush=True,
                )
                if servers[1].process is None:
                    servers[1].start()
                    labeler([servers[1].base_url]).predict_proba(golden[:1])
    finally:
        for server in servers:
            server.close()

    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Fleet of OpenAI-compatible servers (benchmarks/fleet.py)",
        "",
        f"- Command: `{command}`",
        f"- Date: {when}",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores shared with other work; load average "
        f"(1/5/15 min) at the start and at the end: {load_at_start}; {load_average()}",
        f"- Servers: llama_cpp.server (Python) with the bundled Gemma 3 270M GGUF on loopback, "
        f"n_ctx 1024, its default threads; {args.concurrency} requests in flight per server",
        f"- Items: {len(items)} emotion validation items (seed {SEED}), 2 golden examples, answer_tokens 1, "
        "no response cache (one request per item); the killed server dies after a third of the items",
        "",
        f"| set-up | items/s, mean ± std over {args.runs} runs | min - max | accuracy | "
        "requests per run (per server) |",
        "|---|--:|--:|--:|---|",
    ]
    for name in SETUPS:
        r = rates[name]
        std = statistics.stdev(r) if len(r) > 1 else 0.0
        lines.append(
            f"| {name} | {statistics.mean(r):.3f} ± {std:.3f} | {min(r):.3f} - {max(r):.3f} | "
            f"{statistics.mean(accuracy[name]):.3f} | "
            + (f"{notes[name][0]}, every run" if len(set(notes[name])) == 1 else "; ".join(notes[name]))
            + " |"
        )
    one, two = statistics.mean(rates["1 server"]), statistics.mean(rates["2 servers"])
    lines += [
        "",
        f"- Two servers against one: {two / one:.2f}x. Both servers share this machine's "
        f"{os.cpu_count()} cores, so a second server adds no CPU: this measures what dispatch over "
        "two servers costs or gains on one machine, not the speed-up of servers on separate hardware. "
        "Where other jobs load the machine (see the load average), two server processes also get a "
        "larger share of the CPU from the scheduler than one: a gain here can come from that, not from "
        "the fleet.",
        (
            "- Every run labelled every item; the requests counted equal the items (one request each, "
            "none counted twice), including the runs whose second server was killed."
            if exact
            else "- **Some run did not label every item with exactly one request each** (see the table)."
        ),
        "- `cache_prompt` is not measured: the Python llama_cpp.server ignores it (it reuses the "
        "previous prompt's prefix by itself); it is meant for llama.cpp's own server (`llama-server`).",
        "- The bundled 270M base model is a weak labeler: accuracy is here only to show that the "
        "three set-ups label alike.",
    ]
    print("\n".join(lines))
    if args.record:
        record_section(lines[0].removeprefix("## "), "\n".join(lines[2:]))
        print("recorded in docs/benchmarks.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
