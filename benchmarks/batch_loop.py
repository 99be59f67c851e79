"""The batch loop on ``emotion``: model accuracy and human share from batch to batch.

    python benchmarks/batch_loop.py [--record] [--batches 5] [--batch-size 1000] [--error 0.15]

The train split is streamed in batches through a real project (``duolabel run`` semantics:
label -> calibrate -> route -> people -> aggregate -> retrain on the people's labels -> next
batch). The golden set is 300 train items. People are simulated from the gold labels: each of
the ``overlap`` answers is right with probability ``1 - error`` and otherwise one of the other
labels at random. Routing uses the project defaults (threshold policy, target mode: accepted
labels >= 90% right with probability >= 0.9).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import yaml
from sqlalchemy import select

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))

from _record import record_section  # noqa: E402

from duolabel import Project  # noqa: E402
from duolabel.pipeline import batch_reports, run_project  # noqa: E402
from duolabel.store import Annotation, Annotator, FinalLabel, Item, Prediction, Route  # noqa: E402


def simulate_people(project: Project, error: float, rng: np.random.Generator) -> int:
    """Answer every routed item still short of answers, from its gold label."""
    labels = project.config.task.label_names
    with project.store.write() as session:
        people = {}
        waiting = session.execute(
            select(Route.item_id, Route.overlap, Item.gold_label)
            .join(Item, Item.id == Route.item_id)
            .where(Route.decision == "humans", Route.item_id.not_in(select(FinalLabel.item_id)))
        ).all()
        given = 0
        for item_id, overlap, gold in waiting:
            have = session.scalars(select(Annotation.annotator_id).where(Annotation.item_id == item_id)).all()
            for k in range(len(have), overlap):
                name = f"sim{k}"
                if name not in people:
                    person = session.scalar(select(Annotator).where(Annotator.name == name))
                    if person is None:
                        person = Annotator(name=name, password_hash="-")
                        session.add(person)
                        session.flush()
                    people[name] = person.id
                right = rng.random() >= error
                label = gold if right else rng.choice([lab for lab in labels if lab != gold])
                session.add(Annotation(item_id=item_id, annotator_id=people[name], label=label))
                given += 1
    return given


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--golden", type=int, default=300)
    parser.add_argument("--error", type=float, default=0.15)
    parser.add_argument(
        "--targets", default="0.9,0.7", help="routing.target_accuracy values to run (0.9 is the default)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    rows = [json.loads(line) for line in (DATA / "emotion" / "items.jsonl").open(encoding="utf-8")]
    labels = json.loads((DATA / "emotion" / "labels.json").read_text(encoding="utf-8"))["labels"]
    train = [r for r in rows if r["split"] == "train"]
    order = np.random.default_rng(0).permutation(len(train))
    golden = [train[i] for i in order[: args.golden]]
    stream = [train[i] for i in order[args.golden : args.golden + args.batches * args.batch_size]]

    def run(target: float) -> tuple[list, int]:
        folder = Path(tempfile.mkdtemp(prefix="duolabel-batches-")) / "emotion"
        folder.mkdir()
        data = [{"path": "golden.jsonl", "role": "golden", "gold_column": "gold"}]

        def write(name: str, part: list[dict]) -> None:
            with (folder / name).open("w", encoding="utf-8") as handle:
                for r in part:
                    handle.write(json.dumps({"id": r["id"], "text": r["text"], "gold": r["gold"]}) + "\n")

        write("golden.jsonl", golden)
        for b in range(args.batches):
            name = f"batch{b + 1:02d}.jsonl"
            write(name, stream[b * args.batch_size : (b + 1) * args.batch_size])
            data.append({"path": name, "gold_column": "gold"})
        config = {
            "task": {"labels": [{"name": label} for label in labels]},
            "data": data,
            "routing": {"target_accuracy": target},
        }
        (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

        rng = np.random.default_rng(1)
        answers = 0
        with Project.open(folder) as project:
            for _ in range(2 * args.batches + 2):
                summary = run_project(project)
                if summary.waiting_batch is None:
                    break
                answers += simulate_people(project, args.error, rng)
            reports = batch_reports(project)
            with project.store.read() as session:
                rows_out = []
                for report in reports:
                    preds = session.execute(
                        select(Prediction.label, Item.gold_label)
                        .join(Item, Item.id == Prediction.item_id)
                        .where(Item.batch == report.batch, Prediction.model_version == report.model_version)
                    ).all()
                    finals = session.execute(
                        select(FinalLabel.label, Item.gold_label)
                        .join(Item, Item.id == FinalLabel.item_id)
                        .where(Item.batch == report.batch)
                    ).all()
                    model_acc = float(np.mean([p == g for p, g in preds])) if preds else float("nan")
                    final_acc = float(np.mean([p == g for p, g in finals])) if finals else float("nan")
                    rows_out.append((report, model_acc, final_acc, len(finals)))
        shutil.rmtree(folder.parent, ignore_errors=True)
        return rows_out, answers

    results = {float(t): run(float(t)) for t in args.targets.split(",")}

    lines = [
        f"Command: `python benchmarks/batch_loop.py --record --batches {args.batches} --batch-size "
        f"{args.batch_size} --error {args.error} --targets {args.targets}` — "
        f"{date.today().isoformat()}, {platform.machine()}, 2 cores, "
        f"Python {platform.python_version()}, CPU only.",
        "",
        f"emotion train split, {args.golden} golden items, {args.batches} batches of {args.batch_size}; "
        f"simulated people answer from the gold label with error rate {args.error} "
        "(3 per routed item, the default overlap). "
        "Model accuracy is that of the model that routed the batch, "
        "measured on all of the batch's items against gold; the model retrains on the people's labels "
        "before each next batch. The default target (0.9) cannot be certified for this model, so",
        "everything goes to people; a lower target shows the human share moving.",
    ]
    for target, (rows_out, answers) in results.items():
        lines += [
            "",
            f"Routing target {target} ({answers:,} answers from simulated people):",
            "",
            "| batch | model | model golden acc. (CV) | model accuracy on the batch | human share "
            "| final accuracy |",
            "|---|---|---|---|---|---|",
        ]
        for report, model_acc, final_acc, n_final in rows_out:
            golden_acc = "–" if report.golden_accuracy is None else f"{report.golden_accuracy:.3f}"
            lines.append(
                f"| {report.batch} | {(report.model_version or '–')[:8]} | {golden_acc} | {model_acc:.3f} | "
                f"{report.human_share:.1%} | {final_acc:.3f} ({n_final:,} labels) |"
            )
    lines += [
        "",
        f"Run time {time.perf_counter() - started:.0f} s; load average at the end "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section("Batch loop on emotion", text)


if __name__ == "__main__":
    main()
