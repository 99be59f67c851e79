"""Quality of the LLM labelers (``llama`` in-process, ``openai`` against a local server).

    python benchmarks/llm_quality.py [--golden 150] [--measured 200] [--openai-measured 60] [--record]

Both run the bundled Gemma 3 270M base model (the only GGUF that installs here); it is a
weak labeler, so these figures check the path end to end, not a quality target. For each
data set: ``--golden`` golden items (seeded draw) are the few-shot pool and get
leave-one-out predictions, on which temperature scaling is fitted; the figures are on
``--measured`` other items (``emotion``: the validation split). The ``openai`` labeler talks
to a real ``llama_cpp.server`` on 127.0.0.1 serving the same GGUF; it is much slower (the
server ranks the whole vocabulary per token), hence its smaller sample.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from _record import record_section  # noqa: E402

from duolabel.core.calibration import TemperatureScaling, calibration_metrics  # noqa: E402
from duolabel.labelers import EmbeddingLabeler, TextItem  # noqa: E402
from duolabel.labelers.embedding import MemoryEmbeddingCache  # noqa: E402


def load(name: str, max_chars: int = 400) -> tuple[list[dict], list[str], str]:
    with (DATA / name / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    meta = json.loads((DATA / name / "labels.json").read_text(encoding="utf-8"))
    for row in rows:
        row["text"] = row["text"][:max_chars]
    return rows, meta["labels"], meta.get("instruction", "")


def split(name: str, n_golden: int, n_measured: int, seed: int = 7):
    rows, labels, instruction = load(name)
    rng = np.random.default_rng(seed)
    if name == "emotion":
        train = [r for r in rows if r["split"] == "train"]
        test = [r for r in rows if r["split"] == "validation"]
        golden = [train[i] for i in rng.permutation(len(train))[:n_golden]]
        measured = [test[i] for i in rng.permutation(len(test))[:n_measured]]
    else:
        order = rng.permutation(len(rows))
        golden = [rows[i] for i in order[:n_golden]]
        measured = [rows[i] for i in order[n_golden : n_golden + n_measured]]
    return golden, measured, labels, instruction


def items(rows: list[dict]) -> list[TextItem]:
    return [TextItem(r["id"], r["text"], r["id"]) for r in rows]


def evaluate(labeler, golden, measured, labels) -> dict[str, float]:
    labeler.fit(items(golden), [r["gold"] for r in golden])
    started = time.perf_counter()
    g_probs, _ = labeler.predict_proba(items(golden))  # leave-one-out: never its own example
    m_probs, usage = labeler.predict_proba(items(measured))
    seconds = time.perf_counter() - started
    g_ok = ~np.isnan(g_probs).any(axis=1)
    m_ok = ~np.isnan(m_probs).any(axis=1)
    g_gold = np.array([labels.index(r["gold"]) for r in golden])[g_ok]
    m_gold = np.array([labels.index(r["gold"]) for r in measured])[m_ok]
    cal = TemperatureScaling().fit(g_probs[g_ok], g_gold)
    before = calibration_metrics(m_probs[m_ok], m_gold)
    after = calibration_metrics(cal.transform(m_probs[m_ok]), m_gold)
    majority = float(np.bincount(m_gold, minlength=len(labels)).max() / max(len(m_gold), 1))
    return {
        "measured": len(measured),
        "abstained": int((~m_ok).sum() + (~g_ok).sum()),
        "items_s": (len(golden) + len(measured)) / seconds,
        "accuracy": after["accuracy"],
        "majority": majority,
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "brier_after": after["brier"],
        "auroc": after["auroc"],
        "input_tokens": usage.input_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--golden", type=int, default=150)
    parser.add_argument("--measured", type=int, default=200)
    parser.add_argument("--openai-measured", type=int, default=60)
    parser.add_argument("--openai-golden", type=int, default=40)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    from tests.llm_server import MODEL_ALIAS, LlamaServer, gguf_path

    from duolabel.labelers.llama import LlamaLabeler
    from duolabel.labelers.openai import OpenAILabeler

    encoder = EmbeddingLabeler(labels=["x", "y"], cache=MemoryEmbeddingCache())

    def encode(batch):
        return encoder.encode(batch)[0]

    rows = []
    server = LlamaServer(gguf_path(), n_ctx=2048).start()
    try:
        for name in ("amazon_isbook", "emotion"):
            golden, measured, labels, instruction = split(name, args.golden, args.measured)
            common = {"labels": labels, "instructions": instruction, "few_shot": 4, "encode": encode}
            result = evaluate(LlamaLabeler(**common, n_ctx=2048), golden, measured, labels)
            rows.append(("llama", name, args.golden, result))
            print("llama", name, result, flush=True)
            o_golden = golden[: args.openai_golden]
            o_measured = measured[: args.openai_measured]
            openai_labeler = OpenAILabeler(
                **common,
                model=MODEL_ALIAS,
                base_url=server.base_url,
                answer_tokens=1,
                concurrency=2,
                timeout=120,
            )
            result = evaluate(openai_labeler, o_golden, o_measured, labels)
            rows.append(("openai (llama_cpp.server)", name, args.openai_golden, result))
            print("openai", name, result, flush=True)
    finally:
        server.close()

    lines = [
        f"- Command: `python benchmarks/llm_quality.py --golden {args.golden} --measured {args.measured} "
        f"--openai-golden {args.openai_golden} --openai-measured {args.openai_measured}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; 2 cores, Python {platform.python_version()}, "
        f"CPU only; load average at the end {os.getloadavg()[0]:.2f}",
        "- Model: the bundled Gemma 3 270M base GGUF for both paths (weak: a check of the path, no target);",
        "  texts cut to 400 characters; 4 few-shot examples chosen by MiniLM similarity; temperature scaling",
        "  fitted on the golden items' leave-one-out predictions; ECE with 10 equal-mass bins.",
        "",
        "| labeler | data | golden | measured | abstained | accuracy | majority-class rate | ECE before | "
        "ECE after | Brier after | AUROC | items/s |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for labeler, data, n_golden, r in rows:
        lines.append(
            f"| {labeler} | {data} | {n_golden} | {r['measured']} | {r['abstained']} | {r['accuracy']:.3f} | "
            f"{r['majority']:.3f} | {r['ece_before']:.3f} | {r['ece_after']:.3f} | {r['brier_after']:.3f} | "
            f"{r['auroc']:.3f} | {r['items_s']:.2f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.record:
        record_section("LLM labelers: quality on the shared data (benchmarks/llm_quality.py)", text)


if __name__ == "__main__":
    main()
