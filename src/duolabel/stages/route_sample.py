"""Routing under the dataset-level guarantee certified from a sample
(``routing.guarantee: dataset`` with ``routing.dataset_source: sample``).

The maths is :mod:`duolabel.core.pac`; this module runs it in a project, in two steps:

1. the first route run draws a seeded uniform sample of the items to route (recorded in the
   ledger as a ``sample`` run, so every later run reads the same items back instead of drawing
   again) and sends the sampled items to people as regular tasks; the other items wait;
2. once people's answers to every sampled item are aggregated, a route run certifies the
   threshold from them and routes the rest by it. The sampled items keep people's labels.

No golden item and no calibration is needed: the scores are the calibrated confidences where
calibration ran, the labeler's own otherwise (the certificate is valid for any score; a better
one only leaves fewer items to people).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, select

from duolabel.config import RoutingConfig
from duolabel.context import Context
from duolabel.core.evidence import measured_accuracies
from duolabel.core.operating import GRID, majority_accuracy
from duolabel.core.pac import SampleCertificate, certify_sample, draw_sample, sampling_probabilities
from duolabel.errors import ProjectError
from duolabel.ledger import ledger_run
from duolabel.progress import Reporter, quiet
from duolabel.store import Annotator, FinalLabel, Item, Prediction, Route, Run
from duolabel.store.tables import utcnow
from duolabel.training_data import routes_by_sample

__all__ = ["SampleState", "route_with_sample", "routes_by_sample", "sample_state"]

#: The ledger kind of the run that records a drawn sample.
SAMPLE_RUN = "sample"
PEOPLE = ("humans", "fused", "expert")


@dataclass
class SampleState:
    """The recorded sample and how far people are with it."""

    items: list[str]  # the sampled items, in draw order
    seed: int
    population: int  # items the sample was drawn from
    missing: int  # sampled items without an aggregated human label yet

    @property
    def message(self) -> str:
        """What routing waits for, in words ("" once every answer is in).

        Examples
        --------
        >>> SampleState(["a", "b"], seed=0, population=20, missing=1).message[:62]
        "dataset guarantee from a sample: waiting for people's labels o"
        """
        if not self.missing:
            return ""
        return (
            f"dataset guarantee from a sample: waiting for people's labels on {self.missing} of the "
            f"{len(self.items)} sampled items (seed {self.seed}) before the model's labels can be "
            "certified; the other items are not routed until then"
        )


def _candidates(ctx: Context, batches: Sequence[str] | None) -> list[tuple[Prediction, int]]:
    """The current model's predictions on the regular items to route, in import order."""
    from duolabel.ledger import current_model_version

    version = current_model_version(ctx)
    if version is None:
        raise ProjectError("nothing to route yet: run 'duolabel label' first")
    with ctx.store.read() as session:
        query = (
            select(Prediction, Item.seq)
            .join(Item, Item.id == Prediction.item_id)
            .where(Prediction.model_version == version, Item.role == "regular")
            .order_by(Item.seq)
        )
        if batches is not None:
            query = query.where(Item.batch.in_(list(batches)))
        return [(p, seq) for p, seq in session.execute(query)]


def _score(pred: Prediction) -> float:
    # An abstention is never accepted: below every threshold of the grid.
    if pred.abstained:
        return -1.0
    return float(pred.confidence if pred.confidence is not None else pred.raw_confidence)


def _population(ids: Sequence[str], cfg: RoutingConfig) -> str:
    """What a sample was drawn for: the items (whatever their order) and the draw's settings."""
    key = json.dumps([sorted(ids), cfg.sample_seed, cfg.sample_size, cfg.sample_share])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _recorded(ctx: Context, population: str | None = None) -> dict | None:
    """The last sample recorded (for ``population``: the one drawn for those items)."""
    with ctx.store.read() as session:
        runs = session.scalars(
            select(Run).where(Run.kind == SAMPLE_RUN, Run.status == "done").order_by(Run.id.desc())
        )
        for run in runs:
            if population is None or run.config.get("population_key") == population:
                return dict(run.config)
    return None


def sample_state(ctx: Context, population: str | None = None) -> SampleState | None:
    """The recorded sample and how many of its items still lack people's label (None: no
    sample drawn yet). ``population``: the sample drawn for those items (None: the last one)."""
    recorded = _recorded(ctx, population)
    if recorded is None:
        return None
    items = list(recorded["items"])
    with ctx.store.read() as session:
        done = set(
            session.scalars(
                select(FinalLabel.item_id).where(FinalLabel.item_id.in_(items), FinalLabel.source.in_(PEOPLE))
            )
        )
    return SampleState(items, int(recorded["seed"]), int(recorded["population"]), len(set(items) - done))


def _draw(ctx: Context, cfg: RoutingConfig, ids: list[str]) -> SampleState:
    """Draw the sample over ``ids`` and record it, or read back the one recorded for them.

    A sample is only valid for the items it was drawn from: other items to route (another
    batch, items imported since) get a sample of their own.
    """
    population = _population(ids, cfg)
    state = sample_state(ctx, population)
    if state is not None:
        return state
    if not ids:
        raise ProjectError("nothing to sample for routing.dataset_source: sample: no item to route")
    size = cfg.sample_size or max(1, math.ceil(cfg.sample_share * len(ids)))
    # Uniform draws without replacement: the exact hypergeometric test of core.pac, and no
    # item labelled twice.
    q = sampling_probabilities(np.zeros(len(ids)), uniform_share=1.0)
    draws = draw_sample(q, size, np.random.default_rng(cfg.sample_seed))
    items = [ids[i] for i in draws]
    config = {
        "seed": cfg.sample_seed,
        "population": len(ids),
        "population_key": population,
        "size": len(items),
        "items": items,
    }
    with ledger_run(ctx.store, SAMPLE_RUN, config) as run, ctx.store.write() as session:
        run.record(session, {"items": len(items)}, 0.0)
    return SampleState(items, cfg.sample_seed, len(ids), len(items))


def _people_error(ctx: Context, cfg: RoutingConfig) -> float:
    """People's expected error on an item: the majority of ``overlap`` answers, each right with
    the accuracy measured on controls (or the configured prior)."""
    with ctx.store.read() as session:
        skills = measured_accuracies(dict(session.execute(select(Annotator.name, Annotator.skills)).all()))
    accuracy = float(np.mean(list(skills.values()))) if skills else cfg.human_accuracy
    return 1.0 - majority_accuracy(accuracy, cfg.overlap, len(ctx.config.task.label_names))


def _version(kind: str, state: SampleState, threshold: float, model_version: str) -> str:
    key = json.dumps([kind, state.items, state.seed, threshold, model_version])
    return f"sample-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def route_with_sample(
    ctx: Context,
    *,
    batches: Sequence[str] | None = None,
    progress: Reporter = quiet,
    routing: RoutingConfig | None = None,
) -> tuple[dict[str, int], SampleState, SampleCertificate | None, str]:
    """Route by a certificate from a sample: the decision counts, the sample's state, the
    certificate (None while the sample's answers are missing) and the policy version."""
    cfg = routing or ctx.config.routing
    candidates = _candidates(ctx, batches)
    preds = {p.item_id: p for p, _ in candidates}
    seqs = {p.item_id: seq for p, seq in candidates}
    ids = list(preds)
    state = _draw(ctx, cfg, ids)
    sampled = set(state.items)
    model_version = candidates[0][0].model_version if candidates else ""
    decided: dict[str, int] = {}
    cert = None
    if state.missing:
        threshold = math.inf
        version = _version("sample", state, threshold, model_version)
        kinds = dict.fromkeys(state.items, "humans")
    else:
        with ctx.store.read() as session:
            people = dict(
                session.execute(
                    select(FinalLabel.item_id, FinalLabel.label).where(
                        FinalLabel.item_id.in_(state.items), FinalLabel.source.in_(PEOPLE)
                    )
                ).all()
            )
        index = {item: k for k, item in enumerate(ids)}
        drawn = state.items  # drawn from exactly these items (see _draw)
        scores = np.array([_score(preds[i]) for i in ids])
        draws = np.array([index[i] for i in drawn], dtype=int)
        wrong = np.array([preds[i].abstained or preds[i].label != people[i] for i in drawn], dtype=float)
        cert = certify_sample(
            scores, draws, wrong, probabilities=np.full(len(ids), 1.0 / max(len(ids), 1)),
            target=cfg.target_accuracy, risk=cfg.risk, thresholds=GRID,
            people_error=_people_error(ctx, cfg), people_exact=cfg.people_exact,
        )  # fmt: skip
        threshold = cert.threshold
        version = _version("certified", state, threshold, model_version)
        kinds = {
            i: "humans" if i in sampled or scores[k] < threshold else "accept" for k, i in enumerate(ids)
        }
    with ctx.store.read() as session:
        done = set(session.scalars(select(Route.item_id).where(Route.policy_version == version)))
        people_done = set(session.scalars(select(FinalLabel.item_id).where(FinalLabel.source.in_(PEOPLE))))
    # Items people labelled keep their label; the sampled items keep their route.
    todo = [i for i in kinds if i not in done and i not in people_done]
    config = {
        "policy": cfg.model_dump(),
        "model_version": model_version,
        "policy_version": version,
        "threshold": None if math.isinf(threshold) else threshold,
        "guarantee": state.message or (cert.describe() if cert else ""),
        "procedure": "sample",
        "guarantee_kind": "dataset",
        "sample_size": len(state.items),
        "sample_missing": state.missing,
        "certificate_cost": None if cert is None else cert.extra,
    }
    with (
        ledger_run(ctx.store, "route", config) as run,
        progress("Routing items", len(todo)) as advance,
        ctx.store.write() as session,
    ):
        session.execute(delete(Route).where(Route.item_id.in_(todo)))
        session.execute(delete(FinalLabel).where(FinalLabel.item_id.in_(todo), FinalLabel.source == "model"))
        for item_id in todo:
            pred, kind = preds[item_id], kinds[item_id]
            session.add(
                Route(
                    item_id=item_id,
                    decision=kind,
                    overlap=cfg.overlap if kind == "humans" else 0,
                    confidence=pred.confidence,
                    policy_version=version,
                    run_id=run.id,
                    position=seqs[item_id],
                )
            )
            if kind == "accept":
                session.add(
                    FinalLabel(
                        item_id=item_id,
                        label=pred.label,
                        source="model",
                        confidence=_score(pred),
                        votes={},
                        n_votes=0,
                        annotators=[],
                        model_probability=_score(pred),
                        model_version=pred.model_version,
                        policy_version=version,
                        updated_at=utcnow(),
                    )
                )
            decided[kind] = decided.get(kind, 0) + 1
        advance(len(todo))
        run.record(session, {"items": len(todo), **decided}, 0.0)
    return decided, state, cert, version
