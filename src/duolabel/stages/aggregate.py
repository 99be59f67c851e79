"""The aggregation stage: complete sets of people's answers become final labels.

It reads the answers, the known labels of golden and control items and the model's calibrated
probabilities from the store, fits the aggregator ``aggregation.method`` names (by default the
task type's, :mod:`duolabel.core.tasks`; the aggregators are in :mod:`duolabel.core.aggregation`)
and writes ``final_labels`` (source ``humans``, or ``fused`` when the model's vote entered the
posterior), with the run in the ledger.

With dynamic overlap, the pipeline follows up unsure items (routing's ``follow_up_project``)
before this stage runs; an expert's answers replace people's afterwards (the audit stage's
``apply_expert_answers``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import delete, func, select

from duolabel.config import AggregationConfig
from duolabel.context import Context
from duolabel.core.tasks import task_type
from duolabel.ledger import current_model_version, ledger_run
from duolabel.people.assignments import PEOPLE_SOURCES
from duolabel.people.imported import IMPORTED
from duolabel.store import Annotation, Annotator, FinalLabel, Item, Prediction, Route
from duolabel.store.tables import utcnow

__all__ = ["AGGREGATION_FORMAT", "AggregateResult", "aggregate_project"]

AGGREGATION_FORMAT = 1  # bump when the stage's inputs or maths change, to version the labels


@dataclass
class AggregateResult:
    """What one aggregation did: answers to routed items, items finalized, items still waiting,
    and the aggregation version of the labels written (None when nothing was written)."""

    answers: int
    finalized: int
    waiting: int
    version: str | None = None


def _skill(skills: Mapping[str, Any]) -> float | None:
    """Accuracy on controls, shrunk towards 1/2 by one right and one wrong pseudo-answer."""
    controls, correct = skills.get("controls"), skills.get("control_correct")
    if not controls or correct is None:
        return None
    return (float(correct) + 1.0) / (float(controls) + 2.0)


def _params(cfg: AggregationConfig, method: str, skills: Mapping[str, float]) -> dict[str, Any]:
    if method == "dawid_skene":
        return {
            "n_iter": cfg.n_iter,
            "smoothing": cfg.smoothing,
            "diagonal_prior": cfg.diagonal_prior,
            "fuse_model": cfg.fuse_model,
            "model_errors": cfg.model_errors,
        }
    if method == "glad":
        return {"n_iter": cfg.n_iter}
    if method == "weighted_majority_vote":
        return {"skills": dict(skills)}
    return {}


def aggregate_project(ctx: Context, *, refresh: bool = False) -> AggregateResult:
    """Turn the answers of items that have all their answers into final labels.

    The method is ``aggregation.method``, else the task type's default aggregator. Suspended
    annotators' answers are left out (and kept). Golden and control items with a known label
    anchor the estimates (and are never written). The model's calibrated probabilities break
    ties and, with ``fuse_model``, vote. New items are finalized; ``refresh=True``
    re-aggregates every item people labelled.
    The run's method, parameters, answer set and resulting version are in the ledger.

    With dynamic overlap, run routing's ``follow_up_project`` first: an item whose answers
    leave the posterior unsure then gets one more person (or an expert) instead of being
    finalized here.
    """
    cfg = ctx.config.aggregation
    kind = task_type(ctx.config.task.type)
    method = cfg.method or kind.default_aggregator
    labels = ctx.config.task.label_names
    store = ctx.store
    with store.read() as session:
        # item -> (answers asked for, policy version) of the items routed to people.
        routes: dict[str, tuple[int, str | None]] = {
            r.item_id: (r.overlap, r.policy_version)
            for r in session.scalars(select(Route).where(Route.decision == "humans"))
        }
        # Imported answers (``import-answers``) to regular items nobody routed: all their
        # answers are in, so they count as routed to people with that many answers. An item
        # that has a route (accepted from the model, say) or a model or expert label keeps it.
        # Only imported workers' answers count here: work done in the web app is always on a
        # routed item, and a stray answer must not become a final label by itself.
        routes.update(
            (item_id, (int(n), None))
            for item_id, n in session.execute(
                select(Annotation.item_id, func.count())
                .join(Item, Item.id == Annotation.item_id)
                .join(Annotator, Annotator.id == Annotation.annotator_id)
                .where(Item.role == "regular", Annotation.kind != "expert", Annotator.status != "suspended")
                .where(Annotator.password_hash == IMPORTED)
                .where(Annotation.item_id.not_in(select(Route.item_id)))
                .where(
                    Annotation.item_id.not_in(
                        select(FinalLabel.item_id).where(FinalLabel.source.not_in(PEOPLE_SOURCES))
                    )
                )
                .group_by(Annotation.item_id)
            )
        )
        known, golden = {}, set()
        for item_id, gold, role in session.execute(
            select(Item.id, Item.gold_label, Item.role).where(
                Item.role.in_(["golden", "control"]), Item.gold_label.is_not(None)
            )
        ):
            if gold is not None:  # the query leaves them out; this tells the type checker
                known[item_id] = gold
                if role == "golden":
                    golden.add(item_id)
        rows = session.execute(
            select(Annotation.item_id, Annotator.name, Annotation.label, Annotator.skills)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .where(Annotator.status != "suspended", Annotation.item_id.in_(list(routes) + list(known)))
            .where(Annotation.kind != "expert")  # an expert's answer is final on its own
        ).all()
        people_final = set(
            session.scalars(
                select(FinalLabel.item_id).where(FinalLabel.source.in_(["humans", "fused", "expert"]))
            )
        )
        experts = set(session.scalars(select(FinalLabel.item_id).where(FinalLabel.source == "expert")))
    frame = pd.DataFrame([r[:3] for r in rows], columns=["task", "worker", "label"])
    skills = {name: s for name, s in ((r[1], _skill(r[3] or {})) for r in rows) if s is not None}
    routed = frame[frame["task"].isin(list(routes))]
    counts = routed.groupby("task").size() if len(routed) else pd.Series(dtype=int)
    complete = sorted(item for item, route in routes.items() if counts.get(item, 0) >= route[0])
    waiting = len(routes) - len(complete)
    todo = [item for item in complete if item not in (experts if refresh else people_final)]
    if not todo:
        return AggregateResult(len(routed), 0, waiting)
    # Fit on every complete item (so estimates are the same whichever batch an item came in)
    # and on the answers to known items, which anchor each worker's confusion matrix.
    fit_answers = frame[frame["task"].isin(complete) | frame["task"].isin(list(known))]
    fit_answers = fit_answers.sort_values(["task", "worker"], kind="stable").reset_index(drop=True)
    version = current_model_version(ctx)
    with store.read() as session:
        priors = {
            p.item_id: p.calibrated or p.probs
            for p in session.scalars(
                select(Prediction).where(
                    # Not the controls' predictions: they check people, never weigh the model.
                    Prediction.item_id.in_(complete + sorted(golden)),
                    Prediction.model_version == (version or ""),
                    Prediction.abstained.is_(False),
                )
            )
        }
    used_known = {
        t: known[t] for t in known if t in set(fit_answers["task"]) or (cfg.fuse_model and t in priors)
    }
    params = _params(cfg, method, skills)
    # A type whose answers point into the text (spans: the vote's tokens) gets the items' texts.
    texts: dict[str, Any] = {}
    if getattr(kind, "needs_texts", False):
        ids = fit_answers["task"].unique().tolist()
        with store.read() as session:
            texts["texts"] = {
                item_id: text
                for start in range(0, len(ids), 5000)  # under every backend's bound-parameter limit
                for item_id, text in session.execute(
                    select(Item.id, Item.text).where(Item.id.in_(ids[start : start + 5000]))
                )
            }
    aggregator = kind.aggregator(method, labels=labels, **params, **texts)
    aggregator.fit(fit_answers, known=used_known, model_probas=priors or None)
    answer_set = hashlib.sha256(
        json.dumps(fit_answers.astype(str).to_numpy().tolist(), separators=(",", ":")).encode()
    ).hexdigest()
    recorded = {k: v for k, v in params.items() if k != "skills"}
    if "skills" in params:
        recorded["skills"] = hashlib.sha256(json.dumps(params["skills"], sort_keys=True).encode()).hexdigest()
    settings = {
        "format": AGGREGATION_FORMAT,
        "method": method,
        "params": recorded,
        "answer_set": answer_set,
        "model_version": version,
        "known": len(used_known),
    }
    agg_version = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    fused = getattr(aggregator, "model_used_", None)
    # A list-valued answer's confidence is the aggregator's for the whole list (multi_label:
    # every label right); a single label's is its posterior.
    whole = getattr(aggregator, "confidence_", None)
    with (
        ledger_run(store, "aggregate", {**settings, "version": agg_version, "refresh": refresh}) as run,
        store.write() as session,
    ):
        session.execute(delete(FinalLabel).where(FinalLabel.item_id.in_(todo)))
        by_task = fit_answers.groupby("task")
        for item in todo:
            label = aggregator.labels_[item]
            answers = by_task.get_group(item)
            used_model = bool(fused is not None and fused.get(item, False))
            prior = priors.get(item) or {}
            session.add(
                FinalLabel(
                    item_id=item,
                    label=label,
                    source="fused" if used_model else "humans",
                    confidence=float(
                        whole[item] if whole is not None else aggregator.probas_.loc[item, label]
                    ),
                    votes={str(k): int(v) for k, v in answers["label"].value_counts().sort_index().items()},
                    n_votes=len(answers),
                    annotators=sorted(answers["worker"].astype(str)),
                    model_probability=prior.get(label),
                    model_version=version if prior else None,
                    policy_version=routes[item][1],
                    updated_at=utcnow(),
                )
            )
        run.record(session, {"answers": len(fit_answers), "items": len(todo), "version": agg_version}, 0.0)
    return AggregateResult(len(routed), len(todo), waiting, agg_version)
