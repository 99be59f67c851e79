"""Load test of the web app: simulated annotators fetching and answering tasks as fast as they can.

For each store (SQLite, and a private PostgreSQL server started like the test suite's), it
builds a project with ``--items`` routed items (overlap ``--overlap``) plus 200 control
items, creates ``--annotators`` accounts, starts ``duolabel serve`` on a loopback port in its
own process, and lets that many asyncio clients (one cookie jar each, through the JSON API)
loop for ``--seconds``: ``GET /api/v1/task`` then ``POST /api/v1/answer``. Each simulated
person answers the item's true label 90% of the time, so the quality rules see a plausible
crowd. Only 127.0.0.1 is contacted; the run is bounded in time and in items.

Afterwards it checks the store: every acknowledged answer is stored exactly once and nothing
else is (zero lost or duplicated), every finished item has exactly the answers its route asks
for, and nobody was given one item twice. ``--policy dynamic`` routes the items to one person
each under the dynamic policy, which the server follows up after each answer (one more person
while an item is unsure, at most ``--overlap``), so the figures include the live follow-up.
It reports p50/p95/p99 latency of next-task and submit,
answers per second, and, counted inside the server process (a SQLAlchemy
``before_cursor_execute`` listener and the process's CPU clock, installed by this script
around ``duolabel serve``), the SQL statements per next-task and per submit and the server's
CPU milliseconds per answer. ``--floor`` also measures, with the same client loop, a minimal
FastAPI app on the same store doing one SELECT per next-task and one INSERT per submit, and
prints how many times slower the real app is than that floor.

``--runs N`` repeats the whole measurement N times per store (a fresh project, server and
crowd each time) and reports mean ± std (min–max) over the runs, the invariants summed over
them. ``--think-ms MEAN`` makes each simulated person wait a seeded exponential time of that
mean between receiving a task and submitting it (0, the default, is a closed loop).
``--warmup S`` (default 5) lets the crowd work S seconds before the clock starts: latencies
and answers/s are those of the ``--seconds`` after it (the store checks cover everything).
With think time the crowd also arrives staggered, each person after one think time, as a
real crowd does. Started in step, all 50 ask for a task in the same instant, a queue a
real crowd never forms, and with 2 s think time each person's first request is 1 in 9 of
theirs: on PostgreSQL that burst alone made next-task p95 388 ms in a run whose staggered
twin measured 26 ms.
``--record`` writes one docs/benchmarks.md section per configuration (stores, annotators,
think time, workers in its heading), so several sit side by side. With
``$DUOLABEL_LOAD_PROFILE=FILE`` the server is run under cProfile (endpoints inline on the event
loop's thread) and the timed window's profile is written to FILE.

    python benchmarks/load.py                               # 50 annotators, 120 s, both stores
    python benchmarks/load.py --stores sqlite --seconds 10  # a quick look
    python benchmarks/load.py --record                      # also write docs/benchmarks.md
    python benchmarks/load.py --annotators 20 --seconds 20 --floor   # and the floor ratio
    python benchmarks/load.py --stores postgresql --threads 40   # web.threads other than the default
    python benchmarks/load.py --stores postgresql --annotators 200 --think-ms 2000 --runs 5 \
        --serve-args='--workers 4' --record                   # a crowd that reads before answering

Target: p95 < 150 ms on SQLite on the 2-core build machine.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import platform
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HEADING = "Web app under load (benchmarks/load.py)"
LABELS = ["billing", "shipping", "account", "other"]
PASSWORD = "load-test-password"
CONTROLS = 200
TRUTHFUL = 0.9
TARGET_P95_MS = 150.0
PROFILE_ENV = "DUOLABEL_LOAD_PROFILE"


@dataclass
class Stats:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)
    acknowledged_timed: int = 0  # of those, answers sent inside the timed window
    refused: Counter[str] = field(default_factory=Counter)
    empty: int = 0
    uncertain: int = 0  # answers whose response was lost in transport (then retried)
    retried_and_found: int = 0  # ... and found stored on the retry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_project(
    folder: Path,
    *,
    database_url: str | None,
    items: int,
    overlap: int,
    annotators: int,
    threads: int | None = None,
    policy: str = "threshold",
) -> dict:
    """The project, its items and accounts; returns the true label of every item text."""
    import yaml

    from duolabel.people.accounts import password_hasher
    from duolabel.project import Project
    from duolabel.store import Annotator, Item, Route, Run

    folder.mkdir(parents=True)
    config = {
        "task": {"labels": [{"name": n, "description": f"about {n}"} for n in LABELS]},
        "quality": {"exam_size": 0, "control_rate": 0.1, "min_seconds": 0.0},
        # The threshold policy unless asked: a fixed overlap. The dynamic policy starts every
        # item at one person and grows it, up to ``overlap``, while the answers leave it unsure.
        "routing": {"policy": policy, "overlap": overlap, "max_overlap": overlap},
    }
    if database_url:
        config["database_url"] = database_url
    if threads is not None:
        config["web"] = {"threads": threads}
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    rng = random.Random(7)
    truth: dict[str, str] = {}
    password_hash = password_hasher().hash(PASSWORD)  # one hash for all: account creation is not measured
    with Project.open(folder) as project, project.store.write() as session:
        run = Run(kind="route")
        session.add(run)
        session.flush()
        rows, routes = [], []
        for i in range(items + CONTROLS):
            label = rng.choice(LABELS)
            text = f"load item {i}: a customer writes about {label} and more"
            truth[text] = label
            golden = i >= items
            rows.append(
                {
                    "id": f"{'gold' if golden else 'item'}-{i:06d}",
                    "seq": i,
                    "text": text,
                    "fields": {},
                    "content_hash": "x",
                    "batch": "golden" if golden else f"batch-{i // 1000}",
                    "role": "golden" if golden else "regular",
                    "gold_label": label if golden else None,
                }
            )
            if not golden:
                routes.append(
                    {
                        "item_id": rows[-1]["id"],
                        "decision": "humans",
                        "overlap": 1 if policy == "dynamic" else overlap,
                        "policy_version": "load",
                        "run_id": run.id,
                    }
                )
        session.execute(Item.__table__.insert(), rows)
        session.execute(Route.__table__.insert(), routes)
        session.execute(
            Annotator.__table__.insert(),
            [
                {
                    "name": f"sim{i:02d}",
                    "role": "annotator",
                    "password_hash": password_hash,
                    "status": "active",
                    "skills": {},
                    "flags": [],
                }
                for i in range(annotators)
            ],
        )
    return truth


async def log_in(client, name: str, gate: asyncio.Semaphore) -> dict[str, str]:
    # A few at a time: the app counts a login as a failed try until its (slow, on purpose)
    # password check succeeds, and 50 tries in flight from one address hit the per-address
    # limit (web.login_max_failures_per_address) -- 200 people on 127.0.0.1 would be refused.
    async with gate:
        login = await client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    login.raise_for_status()
    return {"x-csrf-token": login.json()["csrf_token"]}


async def work(
    client,
    headers: dict[str, str],
    deadline: float | Callable[[], bool],
    truth: dict[str, str],
    stats: Stats,
    seed: int,
    think_ms: float = 0.0,
    timed_from: float = 0.0,
) -> None:
    """One simulated annotator: next task, answer, until the deadline (a ``time.monotonic()``
    instant, or a function that says whether to go on). With ``think_ms`` > 0 the person waits
    a random exponential time of that mean (seeded) between receiving a task and submitting it,
    and starts after one such wait (people arrive in the middle of their reading, not all in
    the same instant); with 0 they answer as fast as the server allows (a closed loop).
    Latencies and answers count only for requests sent from ``timed_from`` on (a
    ``time.monotonic()`` instant: the end of the warm-up) and before the deadline (a person
    still thinking then finishes the task, uncounted)."""
    import httpx

    rng = random.Random(seed)
    thinking = random.Random(seed + 1_000_003)
    going = deadline if callable(deadline) else lambda: time.monotonic() < deadline
    end = float("inf") if callable(deadline) else deadline

    def timing() -> bool:
        return timed_from <= time.monotonic() < end

    if think_ms > 0:
        await asyncio.sleep(thinking.expovariate(1000.0 / think_ms))
    first = True
    while going():
        timed = timing()
        start = time.perf_counter()
        try:
            response = await client.get("/api/v1/task")
        except httpx.TransportError as exc:  # counted; next-task is safe to repeat
            stats.refused[f"next: {type(exc).__name__}{' (first)' if first else ''}"] += 1
            first = False
            continue
        first = False
        if timed:
            stats.next_ms.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            stats.refused[f"next {response.status_code}"] += 1
            if response.status_code == 401:  # suspended by the quality rules
                return
            continue
        task = response.json()["task"]
        if task is None:
            stats.empty += 1
            await asyncio.sleep(0.2)
            continue
        true = truth[task["text"]]
        label = true if rng.random() < TRUTHFUL else rng.choice([x for x in LABELS if x != true])
        body = {"assignment_id": task["assignment_id"], "label": label, "seconds": 1.5}
        if think_ms > 0:
            await asyncio.sleep(thinking.expovariate(1000.0 / think_ms))
        for attempt in range(3):
            timed = timing()
            start = time.perf_counter()
            try:
                answer = await client.post("/api/v1/answer", json=body, headers=headers)
            except httpx.TransportError as exc:
                # The answer may or may not have been stored: send it again. The server
                # refuses a second answer to one assignment, so a retry cannot duplicate.
                stats.refused[f"answer: {type(exc).__name__}"] += 1
                stats.uncertain += 1
                continue
            if timed:
                stats.submit_ms.append((time.perf_counter() - start) * 1000)
            if answer.status_code == 200:
                stats.acknowledged.append(answer.json()["annotation_id"])
                stats.acknowledged_timed += timed
            else:
                message = answer.json()["error"]["message"]
                if attempt and "already answered" in message:
                    stats.retried_and_found += 1
                else:
                    stats.refused[f"answer {answer.status_code}: {message[:60]}"] += 1
            break


def percentiles(values: list[float]) -> tuple[float, float, float]:
    import numpy as np

    if not values:
        return (float("nan"),) * 3
    return tuple(float(x) for x in np.percentile(values, [50, 95, 99]))  # type: ignore[return-value]


def check_store(folder: Path, stats: Stats) -> dict:
    """The invariants, from the store itself."""
    from sqlalchemy import func, select

    from duolabel.project import Project
    from duolabel.store import Annotation, Annotator, Assignment, Route

    with Project.open(folder) as project, project.store.read() as session:
        stored = list(session.scalars(select(Annotation.id)))
        pairs = session.execute(select(Annotation.item_id, Annotation.annotator_id)).all()
        # Per routed item: its answers and the overlap its route asks for (the dynamic
        # policy's follow-up may have grown it).
        per_item = session.execute(
            select(func.count(), Route.overlap)
            .select_from(Annotation)
            .join(Route, Route.item_id == Annotation.item_id)
            .group_by(Annotation.item_id, Route.overlap)
        ).all()
        given_twice = session.scalar(
            select(func.count()).select_from(
                select(Assignment.item_id, Assignment.annotator_id)
                .group_by(Assignment.item_id, Assignment.annotator_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
        kinds = dict(session.execute(select(Annotation.kind, func.count()).group_by(Annotation.kind)).all())
        suspended = session.scalar(
            select(func.count()).select_from(Annotator).where(Annotator.status == "suspended")
        )
    acknowledged = Counter(stats.acknowledged)
    return {
        "lost": len(set(acknowledged) - set(stored)),
        "duplicated": sum(n - 1 for n in acknowledged.values() if n > 1)
        + len(set(stored) - set(acknowledged)),
        "same_person_twice": len(pairs) - len(set(pairs)) + int(given_twice or 0),
        "finished_items": sum(1 for n, overlap in per_item if n >= overlap),
        "over_or_under_filled_finished": sum(1 for n, overlap in per_item if n > overlap),
        "answers": len(stored),
        "kinds": kinds,
        "suspended": int(suspended or 0),
    }


def run_store(
    store: str, args: argparse.Namespace, workdir: Path, *, floor: bool = False, run: int = 0
) -> dict:
    """One measurement of one store (or of its floor app): a fresh project, server and crowd."""
    database_url = None
    pg = None
    if store == "postgresql":
        sys.path.insert(0, str(REPO))
        from tests.pg import PostgresServer, create_database

        pg = PostgresServer()
        if not pg.available:
            raise SystemExit("PostgreSQL is not installed: apt-get install -y postgresql")
        database_url = create_database(pg.start(), "duolabel_load")
    folder = workdir / f"{store}-{'floor' if floor else 'app'}-{run}"
    try:
        truth = build_project(
            folder,
            database_url=database_url,
            items=args.items,
            overlap=args.overlap,
            annotators=args.annotators,
            threads=args.threads,
            policy=args.policy,
        )
        port = free_port()
        counts = workdir / f"{folder.name}-counts.json"
        command = (
            ["--floor-server", str(folder), str(port)]
            if floor
            else ["serve", str(folder), "--host", "127.0.0.1", "--port", str(port), *args.serve_args]
        )
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--count-into", str(counts), *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DUOLABEL_SECRET": "load-test-secret-0123456789"},
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(base, server)
            stats = Stats()

            async def main() -> None:
                import httpx

                limits = httpx.Limits(max_connections=1)
                clients = [
                    httpx.AsyncClient(base_url=base, timeout=60, limits=limits)
                    for _ in range(args.annotators)
                ]
                try:
                    # Everyone logs in before the clock starts: argon2 is slow on purpose.
                    gate = asyncio.Semaphore(8)
                    headers = await asyncio.gather(
                        *(log_in(c, f"sim{i:02d}", gate) for i, c in enumerate(clients))
                    )
                    timed_from = time.monotonic() + args.warmup
                    await asyncio.gather(
                        *(
                            work(
                                c,
                                h,
                                timed_from + args.seconds,
                                truth,
                                stats,
                                seed=1000 * run + i,
                                think_ms=args.think_ms,
                                timed_from=timed_from,
                            )
                            for i, (c, h) in enumerate(zip(clients, headers, strict=True))
                        )
                    )
                finally:
                    for client in clients:
                        await client.aclose()

            asyncio.run(main())
        finally:
            server.send_signal(signal.SIGINT)
            _, errors = server.communicate(timeout=60)
        if "Traceback" in errors:
            print(errors, file=sys.stderr)
        server_side = json.loads(counts.read_text()) if counts.exists() else {}
        checks = {} if floor else check_store(folder, stats)
        answers = max(1, len(stats.acknowledged))
        per = server_side.get("paths", {})
        return {
            "store": store,
            "floor": floor,
            "run": run,
            "statements_next": _per_request(per, "/api/v1/task"),
            "statements_submit": _per_request(per, "/api/v1/answer"),
            "cpu_ms_per_answer": 1000 * server_side.get("cpu", float("nan")) / answers,
            "next": percentiles(stats.next_ms),
            "submit": percentiles(stats.submit_ms),
            "requests": len(stats.next_ms) + len(stats.submit_ms),
            "answers_per_s": stats.acknowledged_timed / args.seconds,  # the timed window
            "refused": dict(stats.refused),
            "empty": stats.empty,
            "server_tracebacks": errors.count("Traceback"),
            **checks,
        }
    finally:
        if pg is not None:
            pg.stop()


def _per_request(paths: dict, path: str) -> float:
    requests, statements = paths.get(path, (0, 0))
    return statements / requests if requests else float("nan")


# -- inside the server process: counting statements and CPU ---------------------------------


def counted_server(counts: Path, argv: list[str]) -> None:
    """Run ``duolabel <argv>`` (or the floor app) counting, per request path, the requests and
    the SQL statements they ran, and the CPU time from the first timed request to the last;
    written to ``counts`` as JSON at exit."""
    import contextvars

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    current: contextvars.ContextVar[str | None] = contextvars.ContextVar("path", default=None)
    paths: dict[str, list[int]] = {}
    cpu: list[float] = []
    timed = ("/api/v1/task", "/api/v1/answer")

    @event.listens_for(Engine, "before_cursor_execute")
    def count(*_args: object) -> None:
        path = current.get()
        if path is not None:
            paths.setdefault(path, [0, 0])[1] += 1

    def middleware(app):  # a pure ASGI wrapper: the context reaches the endpoint's thread
        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            path = scope["path"]
            if path in timed and not cpu:
                cpu.append(time.process_time())
                if profiler is not None:
                    profiler.enable()
            token = current.set(path)
            try:
                await app(scope, receive, send)
            finally:
                current.reset(token)
                paths.setdefault(path, [0, 0])[0] += 1
                if path in timed:
                    cpu[1:] = [time.process_time()]

        return wrapped

    # $DUOLABEL_LOAD_PROFILE=FILE: cProfile the timed window into FILE (pstats format), to see
    # where the server's CPU per answer goes.
    profile_to = os.environ.get(PROFILE_ENV)
    profiler = None
    if profile_to:
        import cProfile

        import fastapi.dependencies.utils
        import fastapi.routing

        profiler = cProfile.Profile()

        # cProfile sees one thread: run the sync endpoints and dependencies inline on the event
        # loop's thread (the server then serves one request at a time; CPU is what is looked at).
        async def inline(func, *args, **kwargs):  # type: ignore[no-untyped-def]
            return func(*args, **kwargs)

        fastapi.routing.run_in_threadpool = inline  # type: ignore[assignment]
        fastapi.dependencies.utils.run_in_threadpool = inline  # type: ignore[assignment]
        import duolabel.web.api  # its answer routes hop to a thread themselves

        duolabel.web.api.run_in_threadpool = inline  # type: ignore[assignment]

    def write() -> None:
        spent = cpu[-1] - cpu[0] if len(cpu) == 2 else float("nan")
        counts.write_text(json.dumps({"paths": paths, "cpu": spent}))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_to)

    atexit.register(write)
    if argv[0] == "--floor-server":
        floor_server(Path(argv[1]), int(argv[2]), middleware)
        return
    import duolabel.web.app as web_app

    create_app = web_app.create_app
    web_app.create_app = lambda project: middleware(create_app(project))  # type: ignore[assignment]
    from duolabel.cli import main as cli_main

    sys.argv = ["duolabel", *argv]
    cli_main()


def floor_server(folder: Path, port: int, middleware) -> None:
    """The floor: the same store and web stack, one SELECT per next-task, one INSERT per submit."""
    import sqlalchemy as sa
    import uvicorn
    from fastapi import FastAPI

    from duolabel.project import Project

    project = Project.open(folder)
    answers = sa.Table(
        "floor_answers",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_id", sa.String(64)),
        sa.Column("label", sa.String(64)),
    )
    answers.create(project.store.engine, checkfirst=True)
    items = sa.table("items", sa.column("id"), sa.column("seq"), sa.column("text"))
    app = FastAPI()
    rng = random.Random(3)

    @app.post("/api/v1/login")
    def login() -> dict:
        return {"csrf_token": "floor"}

    @app.get("/api/v1/task")
    def task() -> dict:
        with project.store.read() as session:
            row = session.execute(
                sa.select(items.c.id, items.c.text).where(items.c.seq == rng.randrange(CONTROLS))
            ).one()
        return {"task": {"assignment_id": row[0], "text": row[1]}}

    @app.post("/api/v1/answer")
    def answer(body: dict) -> dict:
        with project.store.write() as session:
            new = session.execute(
                answers.insert().values(item_id=str(body["assignment_id"]), label=str(body["label"]))
            ).inserted_primary_key
        return {"annotation_id": int(new[0])}

    @app.get("/login")
    def ready() -> dict:
        return {}

    uvicorn.run(middleware(app), host="127.0.0.1", port=port, log_level="warning")


def wait_for(base: str, server: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"duolabel serve exited: {server.stderr.read() if server.stderr else ''}")
        try:
            if httpx.get(base + "/login", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("duolabel serve did not start within 60 s")


def spread(values: list[float], digits: int = 0) -> str:
    """``mean ± std (min–max)`` over runs (the sample std; one run gives just its value)."""
    import numpy as np

    values = [v for v in values if v == v]  # NaN: nothing was measured (e.g. no request)
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def _by_store(results: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for r in results:
        grouped.setdefault(r["store"], []).append(r)
    return grouped


INVARIANTS = ("lost", "duplicated", "same_person_twice", "over_or_under_filled_finished")


def _think(args: argparse.Namespace) -> str:
    return f"think {args.think_ms:g} ms" if args.think_ms > 0 else "closed loop"


def heading(args: argparse.Namespace) -> str:
    """One docs/benchmarks.md section per configuration, so that several sit side by side."""
    return (
        f"{HEADING}: {' + '.join(args.stores)}, {args.annotators} annotators, {_think(args)}, "
        f"{_workers(args.serve_args)}"
        + (f", {args.threads} threads" if args.threads is not None else "")
        + (f", {args.policy} policy" if args.policy != "threshold" else "")
    )


def _stack() -> str:
    """The HTTP parser and event loop uvicorn picks here ("auto": the compiled ones when installed)."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http} + {loop}"


def report(results: list[dict], floors: list[dict], args: argparse.Namespace) -> str:
    think = (
        f"each annotator waits a seeded exponential think time of mean {args.think_ms:g} ms between "
        "receiving a task and submitting it"
        if args.think_ms > 0
        else "closed loop: no think time, every annotator answers as soon as a task arrives"
    )
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    command = (
        f"python benchmarks/load.py --stores {' '.join(args.stores)} --annotators {args.annotators} "
        f"--seconds {args.seconds:g} --warmup {args.warmup:g} --items {args.items} "
        f"--overlap {args.overlap} --policy {args.policy} --runs {args.runs} "
        f"--think-ms {args.think_ms:g}"
        + (f" --serve-args='{shlex.join(args.serve_args)}'" if args.serve_args else "")
        + (f" --threads {args.threads}" if args.threads is not None else "")
        + (" --floor" if floors else "")
    )
    lines = [
        f"`{command}` on {platform.node() or 'this machine'} ({os.cpu_count()} cores), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average (1/5/15 min) when printed: "
        f"{load}. Server: `duolabel serve` (uvicorn, {_workers(args.serve_args)}, {_stack()}); "
        "clients: one asyncio process on the same machine, JSON API, control rate 0.1, quality rules "
        f"on; {think}. "
        f"Latencies and answers/s count the {args.seconds:g} s after a {args.warmup:g} s warm-up; "
        f"each figure is the mean ± std (min–max) over {args.runs} run(s), each a fresh project, "
        "server and crowd.",
        "",
        "| store | answers/s | next-task p50 | next-task p95 | next-task p99 | submit p50 | submit p95 "
        "| submit p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    grouped, floor_groups = _by_store(results), _by_store(floors)
    for store, runs in grouped.items():
        cells = [spread([r["answers_per_s"] for r in runs])]
        for which in ("next", "submit"):
            cells += [spread([r[which][q] for r in runs]) for q in range(3)]
        lines.append(f"| {store} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Latencies in ms. Counted inside the server process:",
        "",
        "| store | server | SQL statements per next-task | per submit | server CPU ms per answer |",
        "|---|---|---|---|---|",
    ]
    for name, groups in (("duolabel serve", grouped), ("floor (1 SELECT + 1 INSERT)", floor_groups)):
        for store, runs in groups.items():
            lines.append(
                f"| {store} | {name} | {spread([r['statements_next'] for r in runs], 1)} "
                f"| {spread([r['statements_submit'] for r in runs], 1)} "
                f"| {spread([r['cpu_ms_per_answer'] for r in runs], 1)} |"
            )
    lines += [
        "",
        "Invariants, summed over the runs (all must be 0 but answers and finished items):",
        "",
        "| store | answers | lost | duplicated | same item twice to one person | finished items "
        "| finished items not at k | server tracebacks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for store, runs in grouped.items():
        total = {key: sum(r[key] for r in runs) for key in (*INVARIANTS, "answers", "finished_items")}
        lines.append(
            f"| {store} | {total['answers']:,} | {total['lost']} | {total['duplicated']} "
            f"| {total['same_person_twice']} | {total['finished_items']:,} "
            f"| {total['over_or_under_filled_finished']} | {sum(r['server_tracebacks'] for r in runs)} |"
        )
    for store, runs in grouped.items():
        floor = floor_groups.get(store)
        if not floor:
            continue
        mean = lambda rs, f: sum(f(r) for r in rs) / len(rs)  # noqa: E731
        worst = lambda r: max(r["next"][1], r["submit"][1])  # noqa: E731
        cpu = lambda r: r["cpu_ms_per_answer"]  # noqa: E731
        rate = lambda r: r["answers_per_s"]  # noqa: E731
        cpu_ratio = mean(runs, cpu) / mean(floor, cpu)
        # The counters wrap one server process: with several workers there is no CPU figure.
        cpu_text = (
            f"its CPU per answer {cpu_ratio:.1f}x"
            if cpu_ratio == cpu_ratio
            else "its CPU per answer not counted (several server workers)"
        )
        lines.append(
            f"\n{store} floor (one process): next-task p95 {spread([f['next'][1] for f in floor])} ms, "
            f"submit p95 {spread([f['submit'][1] for f in floor])} ms, "
            f"{spread([f['answers_per_s'] for f in floor])} answers/s; the app's worse p95 is "
            f"{mean(runs, worst) / mean(floor, worst):.1f}x the floor's, "
            f"its answers/s {mean(runs, rate) / mean(floor, rate):.2f}x, {cpu_text} "
            "(ratios of the means)."
        )
    for store, runs in grouped.items():
        refused: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        for r in runs:
            refused.update(r["refused"])
            kinds.update(r["kinds"])
        extra = f"refused requests: {dict(refused) or 'none'}; empty next-task answers: "
        extra += f"{sum(r['empty'] for r in runs)}; answers by kind: {dict(kinds)}; "
        extra += f"suspended by the rules: {sum(r['suspended'] for r in runs)}"
        lines.append(f"\n{store} (all runs): {extra}.")
    return "\n".join(lines)


def _workers(serve_args: list[str]) -> str:
    if "--workers" in serve_args:
        return f"{serve_args[serve_args.index('--workers') + 1]} workers"
    return "one worker"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--count-into":
        counted_server(Path(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument(
        "--policy",
        choices=("threshold", "dynamic"),
        default="threshold",
        help="threshold: every item asks --overlap people; dynamic: one person, then one more while "
        "unsure (the server's live follow-up), at most --overlap",
    )
    parser.add_argument(
        "--stores", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole measurement N times per store")
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="mean of each annotator's exponential think time before submitting (0: closed loop)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds the crowd works before the clock starts (latencies and answers/s count after it)",
    )
    parser.add_argument("--floor", action="store_true", help="also measure the minimal app (the floor)")
    parser.add_argument(
        "--serve-args", default="", help="more options for duolabel serve, e.g. --serve-args='--workers 2'"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="web.threads of the project served (worker threads per server process; default: duolabel's)",
    )
    parser.add_argument("--record", action="store_true", help="write the figures to docs/benchmarks.md")
    parser.add_argument("--note", default="", help="a line added under the figures (e.g. machine load)")
    args = parser.parse_args()
    if (
        args.runs < 1
        or args.think_ms < 0
        or args.warmup < 0
        or (args.threads is not None and args.threads < 1)
    ):
        parser.error("--runs and --threads must be at least 1, --think-ms and --warmup at least 0")
    args.serve_args = shlex.split(args.serve_args)
    results, floors = [], []
    with tempfile.TemporaryDirectory(prefix="duolabel-load-") as workdir:
        for store in args.stores:
            for run in range(args.runs):
                print(
                    f"{store}: run {run + 1}/{args.runs}, {args.annotators} annotators, {args.seconds:g} s, "
                    f"{_think(args)} ...",
                    file=sys.stderr,
                )
                results.append(run_store(store, args, Path(workdir), run=run))
                if args.floor:
                    print(f"{store}: the floor app ...", file=sys.stderr)
                    floors.append(run_store(store, args, Path(workdir), floor=True, run=run))
    text = report(results, floors, args) + (f"\n\n{args.note}" if args.note else "")
    print(text)
    bad = sum(r[key] for r in results for key in INVARIANTS)
    if args.record:
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        from _record import record_section

        record_section(heading(args), text)
    if bad:
        raise SystemExit("an invariant failed: see the table above")
    for store, runs in _by_store(results).items():
        worst = max(max(r["next"][1], r["submit"][1]) for r in runs)
        if worst > TARGET_P95_MS:
            print(
                f"note: {store} p95 (worst run) is above the {TARGET_P95_MS:.0f} ms target", file=sys.stderr
            )


if __name__ == "__main__":
    main()
