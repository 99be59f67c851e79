"""The routing stage: choose the operating point on the golden items, then decide every
calibrated item not yet decided under it; and, for the dynamic policy, decide after each
answer whether to ask one more person.

The maths is in :mod:`duolabel.core`: the policies (:mod:`~duolabel.core.policies`, found by
name in ``POLICIES``), the choice of the operating point
(:func:`~duolabel.core.operating.choose_operating_point`) and the evidence
(:mod:`~duolabel.core.evidence`); this module reads the store, calls them and writes back.
"""

from __future__ import annotations

import functools
import math
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from sqlalchemy import CursorResult, Select, and_, bindparam, delete, join, or_, select, true, update

from duolabel.config import CostsConfig, RoutingConfig
from duolabel.context import Context
from duolabel.core.evidence import (
    error_ranking,
    log_length,
    measured_accuracies,
    neighbourhood_accuracy,
    vote_correctness,
)
from duolabel.core.listfollow import LIST_TYPES, list_posterior
from duolabel.core.operating import (
    CurvePoint,
    OperatingPoint,
    choose_operating_point,
    majority_accuracy,
    quality_curve,
)
from duolabel.core.pac import SampleCertificate
from duolabel.core.policies import (
    Decision,
    FollowUpPolicy,
    MetaRouter,
    ThresholdPolicy,
    make_policy,
    policy_version,
    route_items,
)
from duolabel.core.probs import as_matrix, signals
from duolabel.core.prompt_variants import PROMPT_DISAGREEMENT
from duolabel.core.randomized import project_draw
from duolabel.core.tasks import task_type
from duolabel.core.wholelist import LIST_CHANCE, with_list_chance
from duolabel.errors import ProjectError
from duolabel.ledger import answer_price, current_model_version, ledger_run
from duolabel.people.experts import enqueue_expert
from duolabel.progress import Reporter, quiet
from duolabel.store import Annotation, Annotator, ExpertTask, FinalLabel, Item, Prediction, Route
from duolabel.store.bulk import insert_many, new_rows
from duolabel.store.tables import utcnow

__all__ = [
    "Evidence",
    "Plan",
    "RouteResult",
    "configured_policy",
    "error_ranking_of",
    "follow_up_project",
    "item_neighbourhood_accuracy",
    "load_evidence",
    "plan_routing",
    "routed_item_cost",
    "route_project",
]

CHUNK = 2000


@dataclass
class Evidence:
    """What the golden items say about the model and about people, cross-fitted."""

    ids: list[str]
    probs: np.ndarray  # cross-fitted calibrated distributions, as the task type routes them
    gold: np.ndarray  # the gold answer's column in probs (label indices for one label; -1: none)
    features: dict[str, np.ndarray]
    human_correct: np.ndarray  # probability that people's aggregated label is right
    human_accuracy: float  # of one answer: measured on controls, or the configured prior

    @property
    def model_correct(self) -> np.ndarray:
        return self.probs.argmax(axis=1) == self.gold


@dataclass
class Plan:
    """The policy, its scores on the golden items, the curve and the chosen point."""

    policy: ThresholdPolicy
    evidence: Evidence
    scores: np.ndarray
    curve: list[CurvePoint]
    point: OperatingPoint
    version: str
    model_version: str


@dataclass
class RouteResult:
    """What a routing run decided (counts per decision kind) under which point."""

    policy_version: str
    decided: Counter[str] = field(default_factory=Counter)
    unchanged: int = 0
    point: OperatingPoint | None = None
    followed_up: Counter[str] = field(default_factory=Counter)
    # Routing by a sample's certificate (routing.dataset_source: sample): its guarantee or what
    # it waits for, and the certificate once people labelled the sample.
    note: str = ""
    sample_certificate: SampleCertificate | None = None

    @property
    def message(self) -> str:
        """The operating point in words (its guarantee in target mode)."""
        return self.note if self.point is None else self.point.describe()


def _skills(ctx: Context) -> dict[str, float]:
    """Each person's measured accuracy, where enough control answers exist."""
    with ctx.store.read() as session:
        rows = session.execute(select(Annotator.name, Annotator.skills)).all()
    return measured_accuracies(dict(rows))


def configured_policy(routing: RoutingConfig) -> ThresholdPolicy:
    """The configured policy from the registry, its parameters from the routing settings."""
    return make_policy(routing.policy, routing.model_dump())


def _check_policy(ctx: Context, routing: RoutingConfig, policy: ThresholdPolicy | None = None) -> None:
    """Refuse a follow-up policy on lists unless their answers can be fused element by element
    (:mod:`duolabel.core.listfollow`: multi_label, spans) and the policy decides on that
    posterior (``settle``, as :class:`~duolabel.core.policies.DynamicOverlap` does)."""
    kind = ctx.config.task.type
    policy = configured_policy(routing) if policy is None else policy
    if not task_type(kind).list_valued or not isinstance(policy, FollowUpPolicy):
        return
    if kind not in LIST_TYPES or not hasattr(policy, "settle"):
        raise ProjectError(
            f"routing.policy {routing.policy} fuses people's answers one label at a time, and "
            f"task.type {kind}'s answers are lists it has no element-wise posterior for (the "
            f"dynamic policy fuses {' and '.join(LIST_TYPES)} lists): set routing.policy to "
            "threshold or meta"
        )


def load_evidence(ctx: Context, model_version: str, *, routing: RoutingConfig | None = None) -> Evidence:
    """The golden items' cross-fitted calibrated distributions, gold labels, features and
    how likely people are to be right on them, under ``routing`` (None: the project's)."""
    cfg = routing or ctx.config.routing
    labels = ctx.config.task.label_names
    task = task_type(ctx.config.task.type)
    _check_policy(ctx, cfg)
    with ctx.store.read() as session:
        rows = session.execute(
            select(
                Item.id,
                Item.text,
                Item.gold_label,
                Prediction.label,
                Prediction.calibrated,
                Prediction.features,
            )
            .join(Prediction, Prediction.item_id == Item.id)
            .where(
                Item.role == "golden",
                Item.gold_label.is_not(None),
                Prediction.model_version == model_version,
                Prediction.out_of_fold.is_(True),
                Prediction.calibrated.is_not(None),
            )
            .order_by(Item.seq)
        ).all()
        answers = session.execute(
            select(Annotation.item_id, Annotation.label)
            .join(Annotator, Annotator.id == Annotation.annotator_id)
            .join(Item, Item.id == Annotation.item_id)
            .where(Item.role == "golden", Annotator.status != "suspended", Annotator.role != "expert")
        ).all()
    if not rows:
        raise ProjectError(
            "no calibrated golden items to choose the routing threshold on: run 'duolabel calibrate'"
        )
    skills = _skills(ctx)
    accuracy = float(np.mean(list(skills.values()))) if skills else cfg.human_accuracy
    overlap = configured_policy(cfg).max_answers
    prior = majority_accuracy(accuracy, overlap, len(labels))
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for item_id, label in answers:
        votes[item_id][label] += 1
    human_correct = [
        vote_correctness(votes.get(r.id), r.gold_label, overlap=overlap, prior=prior) for r in rows
    ]
    features = {
        "disagreement": np.array([(r.features or {}).get("disagreement", 0.0) for r in rows]),
        "log_length": log_length([r.text for r in rows]),
    }
    if any(PROMPT_DISAGREEMENT in (r.features or {}) for r in rows):
        # An LLM labeler's prompt_variants: reported by error_ranking_of (NaN: not measured).
        features[PROMPT_DISAGREEMENT] = np.array(
            [(r.features or {}).get(PROMPT_DISAGREEMENT, np.nan) for r in rows], dtype=float
        )
    # The task type says what routing scores (for a list: its chance of being entirely right)
    # and which of those columns is the gold answer.
    given = [r.label for r in rows]
    return Evidence(
        [r.id for r in rows],
        with_list_chance(
            task.routing_probs(as_matrix([r.calibrated for r in rows], labels), given, labels),
            [(r.features or {}).get(LIST_CHANCE) for r in rows],
        ),
        task.routing_gold(given, [cast(str, r.gold_label) for r in rows], labels),
        features,
        np.array(human_correct, dtype=float),
        accuracy,
    )


def item_neighbourhood_accuracy(
    ctx: Context, golden_ids: list[str], correct: np.ndarray, item_ids: list[str]
) -> np.ndarray:
    """The model's accuracy on the nearest golden items of each item, in the project's
    embedding space (:func:`duolabel.core.evidence.neighbourhood_accuracy`; a golden item is
    not its own neighbour)."""
    from duolabel.labelers import encoder_for
    from duolabel.labelers.base import TextItem

    with ctx.store.read() as session:
        rows = {
            r.id: TextItem(r.id, r.text, r.content_hash)
            for r in session.execute(
                select(Item.id, Item.text, Item.content_hash).where(
                    Item.id.in_(set(golden_ids) | set(item_ids))
                )
            )
        }
    encoder = encoder_for(ctx)
    golden_vectors = encoder.encode([rows[i] for i in golden_ids])[0]
    vectors = (
        encoder.encode([rows[i] for i in item_ids])[0] if item_ids else np.zeros((0, golden_vectors.shape[1]))
    )
    golden_index = {g: j for j, g in enumerate(golden_ids)}
    return neighbourhood_accuracy(
        vectors, golden_vectors, correct, own=[golden_index.get(i) for i in item_ids]
    )


def routed_item_cost(routing: RoutingConfig, costs: CostsConfig, policy: ThresholdPolicy) -> float:
    """What one item sent to people is expected to cost: the policy's expected answers at
    the crowd's price, or an expert's answer for the ``expert_share`` sent to experts."""
    crowd = (1 - routing.expert_share) * policy.expected_answers * answer_price(costs)
    return crowd + routing.expert_share * costs.expert_answer


def plan_routing(ctx: Context, *, items_to_route: int = 0, routing: RoutingConfig | None = None) -> Plan:
    """Choose the policy's operating point from the golden items (see RoutingConfig.mode).

    ``routing`` is the routing settings to plan with (the pipeline passes them tightened
    after alarms); None means the project's own.
    """
    model_version = current_model_version(ctx)
    if model_version is None:
        raise ProjectError("nothing to route yet: run 'duolabel label' first")
    cfg = routing or ctx.config.routing
    evidence = load_evidence(ctx, model_version, routing=cfg)
    policy = configured_policy(cfg)
    if policy.uses_features:
        evidence.features["neighbourhood_accuracy"] = item_neighbourhood_accuracy(
            ctx, evidence.ids, evidence.model_correct.astype(float), evidence.ids
        )
    wrong = ~evidence.model_correct
    scores = policy.cross_fit_scores(evidence.probs, evidence.features, wrong)
    policy.fit(evidence.probs, evidence.features, wrong)
    curve = quality_curve(scores, evidence.model_correct, evidence.human_correct)
    routed_cost = routed_item_cost(cfg, ctx.config.costs, policy)
    point = choose_operating_point(
        cfg.mode,
        scores,
        evidence.model_correct,
        evidence.human_correct,
        routed_cost=routed_cost,
        threshold=cfg.threshold,
        target=cfg.target_accuracy,
        risk=cfg.risk,
        budget_per_item=None if cfg.budget is None else cfg.budget / max(items_to_route, 1),
        curve=curve,
        guarantee=cfg.guarantee,
        people_exact=cfg.people_exact,
        certification=cfg.certification,
        # The randomized test's uniform: fixed by the model version and the golden item ids,
        # never by their labels or scores (core/randomized.py says why).
        draw=project_draw(model_version, *sorted(evidence.ids)),
    )
    policy.threshold = point.threshold
    params: dict[str, Any] = {
        "threshold": point.threshold,
        **cfg.model_dump(include={"overlap", "max_overlap", "posterior_target", "escalate", "expert_share"}),
    }
    return Plan(
        policy,
        evidence,
        scores,
        curve,
        point,
        policy_version(cfg.policy, params, model_version),
        model_version,
    )


def error_ranking_of(ctx: Context, plan: Plan | None = None) -> dict[str, float]:
    """How well each signal ranks the model's errors on the golden items (AUROC, see
    :func:`duolabel.core.evidence.error_ranking`), and their combination: the meta-router's
    cross-fitted scores over all of them. ``plan`` is a routing plan already made (None:
    one is made). The human share any guarantee needs is bounded by how well the best of these
    ranks the errors."""
    plan = plan or plan_routing(ctx)
    evidence = plan.evidence
    wrong = ~evidence.model_correct
    features = dict(evidence.features)
    if "neighbourhood_accuracy" not in features:
        features["neighbourhood_accuracy"] = item_neighbourhood_accuracy(
            ctx, evidence.ids, evidence.model_correct.astype(float), evidence.ids
        )
    found = signals(evidence.probs)
    raw = {
        "confidence": found["max_prob"],
        "margin": found["margin"],
        "entropy": found["entropy"],
        **{name: features[name] for name in ("disagreement", "neighbourhood_accuracy")},
        # NaN (reported as such) unless an LLM labeler scored prompt_variants.
        PROMPT_DISAGREEMENT: features.get(PROMPT_DISAGREEMENT, np.full(len(wrong), np.nan)),
    }
    combined = MetaRouter().cross_fit_scores(evidence.probs, features, wrong)
    return error_ranking(raw, wrong, combined=combined)


def _item_features(ctx: Context, plan: Plan, preds: list[Prediction]) -> dict[str, np.ndarray]:
    if not plan.policy.uses_features:
        return {}
    ids = [p.item_id for p in preds]
    with ctx.store.read() as session:
        texts = dict(session.execute(select(Item.id, Item.text).where(Item.id.in_(ids))).all())
    features = {
        "disagreement": np.array([(p.features or {}).get("disagreement", 0.0) for p in preds]),
        "log_length": log_length([texts[i] for i in ids]),
        "neighbourhood_accuracy": item_neighbourhood_accuracy(
            ctx, plan.evidence.ids, plan.evidence.model_correct.astype(float), ids
        ),
    }
    # An LLM labeler's prompt_variants (NaN: not measured; the router fills it with the golden
    # mean, and ignores it when it was fitted without it).
    features[PROMPT_DISAGREEMENT] = np.array(
        [(p.features or {}).get(PROMPT_DISAGREEMENT, np.nan) for p in preds], dtype=float
    )
    return features


def route_project(
    ctx: Context,
    *,
    batches: Sequence[str] | None = None,
    progress: Reporter = quiet,
    routing: RoutingConfig | None = None,
) -> RouteResult:
    """Decide every calibrated item not yet decided under the current operating point.

    Accepted items get the model's label as their final label; the others join the human
    queue with the policy's overlap, or the expert queue. Golden items keep their expert
    label. Items people have already labelled are never re-routed, nor are items in people's
    hands: routed to people with an answer given, or escalated to an expert and still open.
    With the dynamic policy, items whose answers are in are first followed up
    (:func:`follow_up_project`).
    ``batches`` limits routing to the items of those batches; ``routing`` is the settings
    the operating point is chosen under (None: the project's own, see :func:`plan_routing`).
    """
    followed = follow_up_project(ctx)
    store = ctx.store
    with store.read() as session:
        people_done = set(
            session.scalars(
                select(FinalLabel.item_id).where(FinalLabel.source.in_(["humans", "expert", "fused"]))
            )
        )
        # A new model or policy version does not re-decide items in people's hands: the model's
        # score alone would drop the answers given (or the disagreement that escalated an item)
        # and reset the overlap the dynamic policy grew. Items without any answer are re-decided.
        started = select(Annotation.item_id).where(Annotation.kind == "regular")
        escalated = select(ExpertTask.item_id).where(
            ExpertTask.state == "open", ExpertTask.reason == "escalated"
        )
        in_hand = set(
            session.scalars(
                select(Route.item_id).where(
                    Route.decision.in_(["humans", "expert"]),
                    or_(Route.item_id.in_(started), Route.item_id.in_(escalated)),
                )
            )
        )
    version = current_model_version(ctx)
    if version is None:
        raise ProjectError("nothing to route yet: run 'duolabel label' first")
    with store.read() as session:
        candidates = [
            (pid, item_id, seq)
            for pid, item_id, seq in session.execute(
                select(Prediction.id, Prediction.item_id, Item.seq)
                .join(Item, Item.id == Prediction.item_id)
                .where(
                    Prediction.model_version == version,
                    or_(Prediction.confidence.is_not(None), Prediction.abstained.is_(True)),
                    Item.role == "regular",
                    Item.batch.in_(list(batches)) if batches is not None else true(),
                )
                .order_by(Item.seq)
            )
            if item_id not in people_done and item_id not in in_hand
        ]
    plan = plan_routing(ctx, items_to_route=len(candidates), routing=routing)
    labels = ctx.config.task.label_names
    task = task_type(ctx.config.task.type)
    cfg = ctx.config.routing  # the ledger records the project's settings, as configured
    with store.read() as session:
        decided = set(session.scalars(select(Route.item_id).where(Route.policy_version == plan.version)))
        golden = session.execute(
            select(Item.id, Item.gold_label)
            .where(Item.role == "golden", Item.gold_label.is_not(None))
            .where(Item.id.not_in(select(FinalLabel.item_id)))
        ).all()
    todo = [pid for pid, item_id, _ in candidates if item_id not in decided]
    seqs = {item_id: seq for _, item_id, seq in candidates}
    result = RouteResult(plan.version, unchanged=len(decided), point=plan.point, followed_up=followed)
    point = plan.point
    certificate = point.certificate or point.dataset_certificate
    run_config = {
        "policy": cfg.model_dump(),
        "model_version": version,
        "policy_version": plan.version,
        "threshold": None if math.isinf(point.threshold) else point.threshold,
        "model_share": point.model_share,
        "expected_accuracy": point.expected_accuracy,
        "accuracy_interval": point.accuracy_interval,
        "guarantee": result.message,
        # Which family-wise procedure certified the point, and what the guarantee cost on the
        # golden items (the human share of the best threshold in hindsight).
        "procedure": None if certificate is None else certificate.procedure,
        "guarantee_kind": cfg.guarantee if cfg.mode == "target" else None,
        "hindsight_human_share": point.hindsight_human_share,
    }
    with ledger_run(store, "route", run_config) as run, progress("Routing items", len(todo)) as advance:
        with store.write() as session:
            for item_id, gold in golden:  # the query keeps items with a gold label only
                session.add(FinalLabel.from_expert(item_id, cast(str, gold)))
        for start in range(0, len(todo), CHUNK):
            with store.write() as session:
                preds = list(
                    session.scalars(select(Prediction).where(Prediction.id.in_(todo[start : start + CHUNK])))
                )
                usable = [p for p in preds if not p.abstained]
                probs = task.routing_probs(
                    as_matrix([p.calibrated or {} for p in usable], labels), [p.label for p in usable], labels
                )
                # A list's whole-list chance as calibrated on the golden items, where stored.
                probs = with_list_chance(probs, [(p.features or {}).get(LIST_CHANCE) for p in usable])
                features = _item_features(ctx, plan, usable)
                decisions = route_items(plan.policy, probs, features, expert_share=cfg.expert_share)
                by_item = dict(zip([p.item_id for p in usable], decisions, strict=True))
                # An abstention is never accepted: people label the item.
                first = Decision("humans", plan.policy.overlap)
                ids = [p.item_id for p in preds]
                session.execute(delete(Route).where(Route.item_id.in_(ids)))
                session.execute(delete(FinalLabel).where(FinalLabel.item_id.in_(ids)))
                routes: list[Route] = []
                finals: list[FinalLabel] = []
                for pred in preds:
                    decision = by_item.get(pred.item_id, first)
                    routes.append(
                        Route(
                            item_id=pred.item_id,
                            decision=decision.kind,
                            overlap=decision.overlap,
                            confidence=pred.confidence,
                            policy_version=plan.version,
                            run_id=run.id,
                            position=seqs[pred.item_id],  # import order until the learning stage reorders
                        )
                    )
                    if decision.kind == "accept":
                        finals.append(
                            FinalLabel(
                                item_id=pred.item_id,
                                label=pred.label,
                                source="model",
                                confidence=pred.confidence,
                                votes={},
                                n_votes=0,
                                annotators=[],
                                model_probability=pred.confidence,
                                model_version=version,
                                policy_version=plan.version,
                                updated_at=utcnow(),
                            )
                        )
                    result.decided[decision.kind] += 1
                # One executemany per table and chunk: the ORM's flush of each new row took
                # most of the stage's time (issue 17).
                for rows in (routes, finals):
                    if rows:
                        insert_many(session, *new_rows(rows))
                experts = [p.item_id for p in preds if by_item.get(p.item_id, first).kind == "expert"]
                if experts:
                    enqueue_expert(session, experts, "escalated", run.id)
            advance(len(preds))
        with store.write() as session:
            run.record(session, {"items": sum(result.decided.values()), **result.decided}, 0.0)
    return result


@functools.cache
def _open_routes(every: bool) -> Select[tuple[str, int, str | None, str | None, str | None, Any]]:
    """The open routes to people (no final label yet), each with its crowd answers in the
    order given, one row per answer, or one row of NULLs where none is in yet: the route,
    its answers and the answerers' skills in one statement (the web app runs this after every
    answer). ``every``: all such routes; otherwise those of the ``items`` bound at execution.
    Built once per process (bound parameters; building it took a third of a follow-up)."""
    crowd = join(
        Annotation, Annotator, and_(Annotator.id == Annotation.annotator_id, Annotator.role != "expert")
    )
    return (
        select(
            Route.item_id, Route.overlap, Annotator.name, Annotation.label, Annotator.status, Annotator.skills
        )
        .select_from(Route)
        .outerjoin(crowd, and_(Annotation.item_id == Route.item_id, Annotation.kind == "regular"))
        .where(
            Route.decision == "humans",
            true() if every else Route.item_id.in_(bindparam("items", expanding=True)),
        )
        .where(Route.item_id.not_in(select(FinalLabel.item_id)))
        .order_by(Annotation.id)
    )


# The current model's calibrated predictions of the ``items`` (built once, like _open_routes).
_CALIBRATED = select(Prediction.item_id, Prediction.calibrated, Prediction.label).where(
    Prediction.item_id.in_(bindparam("items", expanding=True)),
    Prediction.model_version == bindparam("version"),
    Prediction.calibrated.is_not(None),
)
# A follow-up's decision, written only if the route is still as it was read (``was``).
_FOLLOWED_UP = (
    update(Route)
    .where(Route.item_id == bindparam("item"), Route.decision == "humans", Route.overlap == bindparam("was"))
    .values(decision=bindparam("kind"), overlap=bindparam("to"))
    .execution_options(synchronize_session=False)  # no Route object of the session to update
)


def follow_up_project(
    ctx: Context, items: Collection[str] | None = None, *, undone: bool = False
) -> Counter[str]:
    """Dynamic overlap: for each routed item whose asked-for answers are all in, fuse them with
    the model's distribution and either stop (aggregation then finalizes the item), ask one
    more person (the route's overlap grows by one) or escalate to an expert.

    ``items`` limits the follow-up to those items: the web app follows up the item an answer
    was given to, or taken back from, as soon as it happens (``duolabel.web.actions.follow_up``).
    With ``undone`` (an answer to ``items`` was just taken back), an item whose overlap a
    follow-up grew on that answer (it asks for two more than it has) is asked for one answer
    more than it has again, not for the one the taken-back answer led to.

    Every change is written only if the route is still as it was read, so two follow-ups of
    one item at once (two servers, or the web app and ``aggregate``) cannot undo each other's.
    """
    cfg = ctx.config.routing
    done: Counter[str] = Counter()
    policy = configured_policy(cfg)
    if not isinstance(policy, FollowUpPolicy):
        return done
    _check_policy(ctx, cfg, policy)
    labels = ctx.config.task.label_names
    routes: dict[str, int] = {}  # each open route's overlap
    answers: dict[str, list[tuple[str, str]]] = defaultdict(list)
    # Every crowd answer takes a slot (people/leases); a suspended person's is not used.
    slots: Counter[str] = Counter()
    skills_of: dict[str, dict[str, Any] | None] = {}
    with ctx.store.read() as session:
        chosen = {} if items is None else {"items": list(items)}
        for item_id, overlap, name, label, status, skills in session.execute(
            _open_routes(items is None), chosen
        ):
            routes[item_id] = overlap
            if name is None:  # no crowd answer yet (the outer join's empty side)
                continue
            slots[item_id] += 1
            if status != "suspended":
                answers[item_id].append((name, label))
                skills_of[name] = skills
        ready = [i for i, overlap in routes.items() if slots[i] >= overlap]
        version = current_model_version(ctx, session) if ready else None
        predicted = (
            session.execute(_CALIBRATED, {"items": ready, "version": version}).all() if version else []
        )
    # Grown on the answer just taken back: one answer more than the item has is enough.
    rewound = {i: slots[i] + 1 for i, overlap in routes.items() if undone and overlap == slots[i] + 2}
    skills = measured_accuracies(skills_of)
    priors: dict[str, dict[str, float]] = {r.item_id: r.calibrated for r in predicted}
    model_answers: dict[str, str | None] = {r.item_id: r.label for r in predicted}
    lists = task_type(ctx.config.task.type).list_valued
    updates: dict[str, Decision] = {}
    for item_id in ready:
        given = answers[item_id]
        prior_dist = priors.get(item_id)
        accuracies = [skills.get(name, cfg.human_accuracy) for name, _ in given]
        if lists:  # fused element by element (core/listfollow.py says why)
            sure = list_posterior(
                ctx.config.task.type,
                as_matrix([prior_dist], labels)[0] if prior_dist else None,
                model_answers.get(item_id),
                [label for _, label in given],
                accuracies,
                labels,
            )
            decision = cast(Any, policy).settle(sure, len(given))
        else:
            prior = (
                as_matrix([prior_dist], labels)[0] if prior_dist else np.full(len(labels), 1.0 / len(labels))
            )
            decision = policy.follow_up(prior, [labels.index(label) for _, label in given], accuracies)
        done[decision.kind] += 1
        if decision.kind == "humans":
            # One more than the answers in the slots (a suspended person's answer takes one).
            updates[item_id] = Decision("humans", slots[item_id] + decision.overlap - len(given))
        elif decision.kind != "accept":
            updates[item_id] = decision
    updates.update({i: Decision("humans", n) for i, n in rewound.items()})
    if updates:
        with ctx.store.write() as session:
            escalated = []
            for item_id, decision in updates.items():
                changed = cast(
                    CursorResult[Any],
                    session.execute(
                        _FOLLOWED_UP,
                        {
                            "item": item_id,
                            "was": routes[item_id],
                            "kind": decision.kind,
                            "to": decision.overlap,
                        },
                    ),
                )
                if changed.rowcount and decision.kind == "expert":
                    escalated.append(item_id)
            if escalated:
                enqueue_expert(session, escalated, "escalated")
    return done
