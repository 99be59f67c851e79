"""Redaction before text leaves the machine (``privacy.redact``): recall, false alarms, speed.

Recall is measured on generated personal data: e-mail addresses and phone numbers in several
written forms (national and international, separators, parentheses), planted in sentence
templates. A value counts as found when its whole span was replaced. False alarms are measured on
real texts that carry no personal data of these kinds (amazon_isbook reviews: ISBNs, prices,
years and model numbers are what a pattern recogniser can mistake for a phone number), as the
share of texts in which anything was replaced. Throughput is items per second on one core.

Every figure is a mean over seeds with its standard deviation (the generated values and the
sample of reviews change with the seed).

    python benchmarks/privacy.py --seeds 5 [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from duolabel.labelers.privacy import Redactor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon_isbook" / "items.jsonl"
NAMES = ["jane.doe", "m.rossi", "kim_lee", "support-team", "a.b.c", "olga2024", "j.o'neil"]
DOMAINS = ["example.com", "mail.example.org", "posta.example.it", "uni.example.ac.uk", "example.de"]
TEMPLATES = [
    "Please reply to {} about the refund.",
    "My number is {} if the courier needs it",
    "contact: {} (evenings only)",
    "I wrote to {} twice and nobody answered!!",
    "Call me at {}. Thanks",
]


#: Real US area codes: a random three-digit code is often unassigned, and a number with one is
#: not a phone number anyone has (the recogniser rightly rejects it).
AREAS = [212, 213, 305, 312, 404, 415, 503, 512, 617, 646, 702, 713, 808, 917]


def _phone(rng: random.Random) -> str:
    area, mid, last = rng.choice(AREAS), rng.randint(201, 989), rng.randint(0, 9999)
    uk = f"7{rng.choice([4, 5, 7, 8, 9])}{rng.randint(10, 99)} {rng.randint(100000, 999999)}"  # UK mobiles
    return rng.choice(
        [
            f"({area}) {mid}-{last:04d}",
            f"{area}-{mid}-{last:04d}",
            f"+1 {area} {mid} {last:04d}",
            f"{area}.{mid}.{last:04d}",
            f"+44 {uk}",
            f"0{uk}",
            f"+49 30 {rng.randint(1000000, 9999999)}",
        ]
    )


def _email(rng: random.Random) -> str:
    return f"{rng.choice(NAMES).replace(chr(39), '')}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"


def _recall(redactor: Redactor, rng: random.Random, n: int) -> dict[str, float]:
    found = {"EMAIL": [0, 0], "PHONE": [0, 0]}
    for _ in range(n):
        kind = rng.choice(["EMAIL", "PHONE"])
        value = _email(rng) if kind == "EMAIL" else _phone(rng)
        template = rng.choice(TEMPLATES)
        text = template.format(value)
        start = template.index("{}")
        hits = redactor.find(text)
        covered = any(h.kind == kind and h.start <= start and h.end >= start + len(value) for h in hits)
        found[kind][0] += covered
        found[kind][1] += 1
    return {kind: hit / max(total, 1) for kind, (hit, total) in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n", type=int, default=400, help="generated values per seed")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    redactor = Redactor(["EMAIL", "PHONE"])
    reviews = [json.loads(line)["text"] for line in DATA.open(encoding="utf-8")]
    rows: dict[str, list[float]] = {"EMAIL": [], "PHONE": [], "false": [], "speed": []}
    for seed in range(args.seeds):
        rng = random.Random(seed)
        recall = _recall(redactor, rng, args.n)
        rows["EMAIL"].append(recall["EMAIL"])
        rows["PHONE"].append(recall["PHONE"])
        sample = rng.sample(reviews, 200)
        start = time.perf_counter()
        flagged = sum(bool(redactor.find(text)) for text in sample)
        rows["speed"].append(len(sample) / (time.perf_counter() - start))
        rows["false"].append(flagged / len(sample))

    def fig(values: list[float], fmt: str = ".3f") -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):{fmt}} ± {spread:{fmt}}"

    mean_chars = statistics.mean(len(t) for t in reviews)
    lines = [
        f"Recall on generated values ({args.n} per seed, {args.seeds} seeds):",
        f"- e-mail addresses: {fig(rows['EMAIL'])}",
        f"- phone numbers: {fig(rows['PHONE'])}",
        f"Reviews (amazon_isbook, 200 per seed) with something redacted: {fig(rows['false'])}",
        f"Throughput on reviews (mean {mean_chars:.0f} characters): {fig(rows['speed'], '.0f')} items/s",
    ]
    print("\n".join(lines))
    if args.record:
        from benchmarks._record import record_section

        body = (
            "Command: `python benchmarks/privacy.py --seeds 5 --record` (EMAIL and PHONE, Presidio "
            "pattern recognisers, one core). Mean ± standard deviation over seeds.\n\n"
            "| figure | value |\n|---|---|\n"
            f"| recall, generated e-mail addresses | {fig(rows['EMAIL'])} |\n"
            f"| recall, generated phone numbers (US, UK, DE forms) | {fig(rows['PHONE'])} |\n"
            f"| real reviews with something redacted (no personal data expected) | {fig(rows['false'])} |\n"
            f"| throughput, reviews of {mean_chars:.0f} characters on average | "
            f"{fig(rows['speed'], '.0f')} items/s |\n\n"
            "A redacted review is a false alarm only if what was replaced is not personal data; the "
            "reviews were not checked by hand, so the share is an upper bound on false alarms. The "
            "recogniser accepts only numbers the `phonenumbers` library holds valid: with random, "
            "often unassigned US area codes instead of real ones, phone recall was 0.905 ± 0.011 "
            "(same command, an earlier generator)."
        )
        record_section("Privacy: redaction before text leaves the machine", body)


if __name__ == "__main__":
    main()
