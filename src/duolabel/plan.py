"""``duolabel plan``: what a run would send, spend and ask of people, before it is started.

For each configured labeler the prompt of one item, rendered by the labeler's own prompt
code (LLM labelers), the tokens per item, and the cost and wall time of labelling what is
left, measured on a small sample of items and extrapolated; then the human share at the
configured routing point from the golden curve, and what is asked of people (answers,
control answers, expert items, audits). autolabel's ``plan()`` is the model for the model
side; the human side is what a hybrid project adds.

Planning stores nothing: the sample's predictions, embeddings and LLM answers are kept in
memory only (an LLM server is still paid for the sample's few requests).

The sanity checks (:func:`sanity_checks`) warn, never stop: ``plan``, ``status`` and the
start of ``run`` print them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from duolabel.config import LabelerConfig
from duolabel.context import Context
from duolabel.core.operating import golden_needed
from duolabel.errors import DuolabelError, ProjectError
from duolabel.formatting import money
from duolabel.labelers import TextItem, build_labeler, encode_fn, encoder_for
from duolabel.ledger import answer_price, current_model_version, labeler_versions, model_cost
from duolabel.people.imported import IMPORTED
from duolabel.store import Annotator, FinalLabel, Item, Prediction, Route
from duolabel.training_data import golden_items, routes_by_sample, without_golden

__all__ = ["LabelerPlan", "PeoplePlan", "ProjectPlan", "plan_project", "sanity_checks"]

#: Items an LLM labeler is tried on (the first one also loads the model or opens the client).
SAMPLE = 5
#: Items the encoder of a trainable labeler is timed on (a batch: encoders are batched).
ENCODER_SAMPLE = 16
#: Characters per token when no tokenizer counts them (English text, GPT-style tokenizers).
CHARS_PER_TOKEN = 4.0


@dataclass
class LabelerPlan:
    """What one labeler would cost to label the items it has not labelled yet.

    ``items`` counts golden and regular items (golden items get predictions too);
    ``seconds`` and ``cost`` are for all of them, training included; ``basis`` says how
    the figures were obtained. ``budget_stop`` is the item at which ``labeler.budget``
    would stop the run (None when it would not).
    """

    name: str
    backend: str
    items: int
    project_items: int = 0  # every golden and regular item, labelled or not
    sample: int = 0
    prompt: str | None = None
    tokens_per_item: float | None = None
    tokens_estimated: bool = False
    seconds_per_item: float = 0.0
    cost_per_item: float = 0.0
    seconds: float = 0.0
    cost: float = 0.0
    basis: str = ""
    budget: float | None = None
    budget_stop: int | None = None

    @property
    def project_cost(self) -> float:
        """The whole project's cost from scratch (training included), at the same rates."""
        return self.cost + (self.project_items - self.items) * self.cost_per_item


@dataclass
class PeoplePlan:
    """What the routing point asks of people for the items not routed yet."""

    items: int
    human_share: float
    basis: str
    routed: int
    answers_per_item: float
    answers: int
    control_answers: int
    expert_items: int
    audit_items: int
    cost: float
    accuracy: float | None = None  # the hybrid's expected accuracy on the golden curve
    waiting: int = 0  # items routed to people earlier that have no final label yet


@dataclass
class ProjectPlan:
    """A dry run: the labelers' plans, people's, the warnings and the totals."""

    currency: str
    labelers: list[LabelerPlan]
    people: PeoplePlan
    warnings: list[str] = field(default_factory=list)

    @property
    def model_cost(self) -> float:
        return sum(p.cost for p in self.labelers)

    @property
    def total_cost(self) -> float:
        return self.model_cost + self.people.cost

    def describe(self) -> list[str]:
        """The plan in sentences: how each labeler was measured and where its budget runs
        out, then the routing point and what it asks of people."""
        lines = []
        for lab in self.labelers:
            lines.append(f"{lab.name}: {lab.basis}.")
            if lab.budget_stop is not None:
                lines.append(
                    f"{lab.name}: labeler.budget {money(lab.budget or 0.0, self.currency)} would be "
                    f"reached at about item {lab.budget_stop:,} of {lab.items:,} while labeling with "
                    f"{lab.name}; the run stops there (what was answered is kept): raise labeler.budget "
                    "to label every item."
                )
        people = self.people
        lines += [
            f"Routing: {people.basis}.",
            f"Of {people.items:,} items not routed yet, {people.routed:,} go to people "
            f"(human share {people.human_share:.0%}).",
        ]
        if people.accuracy is not None:
            lines.append(f"expected accuracy of the final labels on the golden curve: {people.accuracy:.3f}.")
        if people.waiting:
            lines.append(f"Besides, {people.waiting:,} items routed earlier still wait for people.")
        cost = money(people.cost, self.currency), money(self.model_cost, self.currency)
        return lines + [
            f"{people.answers:,} answers ({people.routed - people.expert_items:,} items x "
            f"{people.answers_per_item:g} per item), {people.control_answers:,} control answers "
            "(quality.control_rate).",
            f"{people.expert_items:,} items straight to experts (routing.expert_share); an expert audit "
            f"at audit.sample_rate is {people.audit_items:,} final labels.",
            f"people: {cost[0]}; model: {cost[1]}; total {money(self.total_cost, self.currency)}.",
        ]


# -- what is in the store ------------------------------------------------------


def _regular(ctx: Context) -> list[TextItem]:
    with ctx.store.read() as session:
        return [
            TextItem(r.id, r.text, r.content_hash)
            for r in session.execute(
                select(Item.id, Item.text, Item.content_hash).where(Item.role == "regular").order_by(Item.seq)
            )
        ]


def _golden(ctx: Context) -> tuple[list[TextItem], list[str], str | None]:
    """The golden items and labels, and why they are too few to train on (None if not)."""
    try:
        items, gold = golden_items(ctx)
    except DuolabelError as exc:
        return [], [], str(exc)
    return items, gold, None


def _predicted(ctx: Context, name: str, version: str | None) -> set[str]:
    if version is None:
        return set()
    with ctx.store.read() as session:
        return set(
            session.scalars(
                select(Prediction.item_id).where(
                    Prediction.labeler == name, Prediction.model_version == version
                )
            )
        )


# -- measuring a labeler on a sample -------------------------------------------


def _measure_llm(
    ctx: Context, cfg: LabelerConfig, plan: LabelerPlan, sample: list[TextItem], golden: Any
) -> None:
    model = build_labeler(ctx, cfg)
    if getattr(model, "encode", None) is not None:
        model.encode = encode_fn(ctx, store_vectors=False)
    if hasattr(model, "cache"):
        model.cache = None  # the sample's answers are not kept: planning stores nothing
    items, gold = golden
    started = time.perf_counter()
    model.fit(items, gold)
    fit_seconds = time.perf_counter() - started
    plan.prompt = (model.prompts(sample[:1]) or [None])[0]
    rest = sample[1:] or sample[:1]
    try:
        # The first item loads the model (or opens the client); the rest are timed.
        _probs, first = model.predict_proba(sample[:1])
        _probs, usage = model.predict_proba(rest)
    finally:
        if callable(close := getattr(model, "close", None)):
            close()  # an in-process model's memory is not kept past the plan
    plan.sample = len(sample)
    n = max(len(rest), 1)
    tokens = usage.input_tokens + usage.output_tokens
    if plan.backend == "llama":
        # llama.cpp reuses the shared prefix: evaluated tokens undercount what a prompt holds.
        tokens = int(usage.extra.get("prompt_tokens", 0) + usage.extra.get("label_tokens", 0))
    if tokens:
        plan.tokens_per_item = tokens / n
    elif plan.prompt is not None:
        plan.tokens_per_item = len(plan.prompt) / CHARS_PER_TOKEN
        plan.tokens_estimated = True
    spent = usage.as_dict()
    plan.seconds_per_item = usage.seconds / n
    plan.cost_per_item = model_cost(ctx.config.costs, spent) / n
    fixed = fit_seconds + first.seconds - plan.seconds_per_item
    plan.seconds = max(fixed, 0.0) + plan.items * plan.seconds_per_item
    plan.cost = ctx.config.costs.compute_hour * max(fixed, 0.0) / 3600 + plan.items * plan.cost_per_item
    plan.basis = f"measured on {len(sample)} items ({len(rest)} timed after the first), extrapolated"


def _measure_trainable(
    ctx: Context, cfg: LabelerConfig, plan: LabelerPlan, sample: list[TextItem], golden: int
) -> None:
    encoder = build_labeler(ctx, cfg) if cfg.backend == "embedding" else encoder_for(ctx)
    encoder.cache = None
    encoder.encode(sample[:1])  # loads the encoder
    _vectors, usage = encoder.encode(sample)
    plan.sample = len(sample)
    per_item = usage.seconds / max(len(sample), 1)
    plan.seconds_per_item = per_item
    plan.cost_per_item = model_cost(ctx.config.costs, {"seconds": per_item})
    if cfg.backend == "embedding":
        # Golden and regular items are encoded once each; the logistic head costs little.
        plan.seconds = plan.items * per_item
        plan.basis = f"encoder throughput on {len(sample)} items, extrapolated"
    else:
        # Fine-tuning is not sampled (it is the expensive part): a forward and a backward
        # pass (about 3 forward passes) per golden item per epoch, for each of the trainings
        # cross-fitting needs on a small golden set.
        epochs = int(getattr(cfg, "max_epochs", None) or getattr(cfg, "epochs", None) or 1)
        small = golden <= getattr(cfg, "cross_fit_max_items", 0)
        trainings = 1 + (getattr(cfg, "cv_folds", 0) if small else 0)
        plan.seconds = plan.items * per_item + trainings * epochs * golden * 3 * per_item
        plan.basis = (
            f"encoder throughput on {len(sample)} items; training ({trainings} x {epochs} epochs on "
            f"{golden} golden items) is a rough estimate, not measured"
        )
    plan.cost = model_cost(ctx.config.costs, {"seconds": plan.seconds})


def _budget_stop(cfg: LabelerConfig, plan: LabelerPlan) -> None:
    """The item at which ``labeler.budget`` runs out, from the plan's fixed and per-item costs."""
    budget = getattr(cfg, "budget", None)
    plan.budget, plan.budget_stop = budget, None
    if budget is None or plan.cost <= budget or plan.cost_per_item <= 0:
        return
    fixed = plan.cost - plan.items * plan.cost_per_item
    plan.budget_stop = max(int((budget - fixed) / plan.cost_per_item), 0) + 1


def _plan_labeler(ctx: Context, cfg: LabelerConfig, regular: list[TextItem], golden: Any) -> LabelerPlan:
    name = cfg.label_name
    version = labeler_versions(ctx).get(name)
    done = _predicted(ctx, name, version)
    todo = [item for item in regular if item.id not in done]
    train = golden[0]
    items = len(todo) + len([g for g in train if g.id not in done])
    plan = LabelerPlan(name, cfg.backend, items, len(regular) + len(train))
    sample_from = todo or regular or train
    if cfg.backend == "external":
        plan.basis = "imported with 'duolabel import-predictions': it costs nothing here"
        return plan
    if not sample_from:
        plan.basis = "nothing to measure on: import items first"
        return plan
    try:
        if cfg.llm:
            _measure_llm(ctx, cfg, plan, sample_from[:SAMPLE], golden)
        elif cfg.trainable:
            _measure_trainable(ctx, cfg, plan, sample_from[:ENCODER_SAMPLE], len(train))
        else:
            plan.basis = f"a {cfg.backend!r} labeler: not measured (plan knows LLM and trainable labelers)"
    except DuolabelError as exc:
        plan.basis = f"could not measure: {exc}"
    _budget_stop(cfg, plan)
    return plan


# -- the human side ------------------------------------------------------------


def _unrouted(ctx: Context) -> tuple[int, int]:
    """Regular items not routed yet, and items routed to people still without a final label."""
    with ctx.store.read() as session:
        unrouted = session.scalar(
            select(func.count())
            .select_from(Item)
            .where(Item.role == "regular", Item.id.not_in(select(Route.item_id)))
        )
        waiting = session.scalar(
            select(func.count())
            .select_from(Route)
            .where(Route.decision == "humans", Route.item_id.not_in(select(FinalLabel.item_id)))
        )
    return unrouted or 0, waiting or 0


def _plan_people(ctx: Context, items: int, waiting: int) -> tuple[PeoplePlan, Any]:
    from duolabel.stages.route import configured_policy, plan_routing, routed_item_cost

    cfg = ctx.config.routing
    costs = ctx.config.costs
    policy = configured_policy(cfg)
    per_item = policy.expected_answers
    routing = None
    with contextlib.suppress(ProjectError):  # no calibrated model yet
        routing = plan_routing(ctx, items_to_route=items)
    if routing is None:
        share, accuracy = 1.0, None
        basis = (
            "no calibrated model yet: until one is, every item goes to people (the most it can "
            "be); 'duolabel run' trains and calibrates on the golden items, then routing is planned"
        )
    else:
        point = routing.point
        share, accuracy = point.human_share, point.expected_accuracy
        basis = (
            f"the golden curve of model {routing.model_version[:8]} ({len(routing.evidence.ids)} "
            f"golden items, cross-fitted): {point.describe()}"
        )
    routed = math.ceil(share * items)
    experts = round(routed * cfg.expert_share)
    answers = round((routed - experts) * per_item)
    rate = ctx.config.quality.control_rate
    controls = round(answers * rate / (1 - rate)) if rate < 1 else 0
    audit = math.ceil(ctx.config.audit.sample_rate * items)
    cost = routed * routed_item_cost(cfg, costs, policy) + controls * answer_price(costs)
    people = PeoplePlan(
        items, share, basis, routed, per_item, answers, controls, experts, audit, cost, accuracy, waiting
    )
    return people, routing


# -- sanity checks -------------------------------------------------------------


def _active_annotators(ctx: Context) -> int:
    with ctx.store.read() as session:
        return (
            session.scalar(
                select(func.count())
                .select_from(Annotator)
                .where(
                    Annotator.role == "annotator",
                    Annotator.status == "active",
                    Annotator.password_hash != IMPORTED,
                )
            )
            or 0
        )


def _golden_accuracy(ctx: Context, name: str, version: str) -> tuple[float, int] | None:
    with ctx.store.read() as session:
        rows = session.execute(
            select(Prediction.label, Item.gold_label)
            .join(Item, Item.id == Prediction.item_id)
            .where(
                Prediction.labeler == name,
                Prediction.model_version == version,
                Prediction.out_of_fold.is_(True),
                Prediction.abstained.is_(False),
                Item.role == "golden",
                Item.gold_label.is_not(None),
            )
        ).all()
    if not rows:
        return None
    return sum(r.label == r.gold_label for r in rows) / len(rows), len(rows)


def sanity_checks(ctx: Context, *, routing: Any = None) -> list[str]:
    """Warnings about settings that cannot work as configured (none stops anything).

    - ``routing.overlap`` (``max_overlap`` for the dynamic policy) above the active
      annotators who can log in;
    - a ``routing.target_accuracy`` that needs more golden items than the project has,
      with how many more;
    - a labeler whose golden accuracy is below the majority-class rate.

    ``routing`` is a :class:`duolabel.stages.route.Plan` already made (None: made here when
    a calibrated model exists).
    """
    warnings: list[str] = []
    cfg = ctx.config.routing
    key, wanted = ("max_overlap", cfg.max_overlap) if cfg.policy == "dynamic" else ("overlap", cfg.overlap)
    active = _active_annotators(ctx)
    if wanted > active:
        warnings.append(
            f"routing.{key} is {wanted} but the project has {active} active annotator(s) who can log "
            f"in: an item sent to people cannot get {wanted} different answers; add people with "
            f"'duolabel annotators add NAME' or lower routing.{key}"
        )
    with ctx.store.read() as session:
        gold = list(
            session.scalars(
                select(Item.gold_label).where(Item.role == "golden", Item.gold_label.is_not(None))
            )
        )
    if cfg.mode == "target" and not routes_by_sample(cfg):
        # Certified from a sample, the target needs no golden item (stages.route_sample).
        warnings += _target_warning(ctx, len(gold), routing)
    if gold:
        label, count = Counter(gold).most_common(1)[0]
        majority = count / len(gold)
        for name, version in labeler_versions(ctx).items():
            measured = _golden_accuracy(ctx, name, version)
            if measured is not None and measured[0] < majority:
                warnings.append(
                    f"labeler {name!r} is right on {measured[0]:.1%} of {measured[1]} golden items, below "
                    f"the {majority:.1%} of always answering {label!r} (the most common gold label): "
                    "it has learnt little; add golden items or try another labeler"
                )
    return warnings


def _target_warning(ctx: Context, n_golden: int, routing: Any) -> list[str]:
    cfg = ctx.config.routing
    if routing is None and current_model_version(ctx) is not None:
        from duolabel.stages.route import plan_routing

        try:
            routing = plan_routing(ctx)
        except ProjectError:
            routing = None
    goal = f"routing.target_accuracy {cfg.target_accuracy:g} at risk {cfg.risk:g}"
    if routing is None:
        # Before any model: even a model right on every golden item needs this many.
        least = golden_needed(1.0, 0.0, cfg.target_accuracy, cfg.risk)
        if least is not None and n_golden < least:
            return [
                f"{goal} needs at least {least} golden items even for a model that is never wrong; "
                f"the project has {n_golden}: import {least - n_golden} more "
                "('duolabel import FILE --role golden --gold COLUMN' or 'duolabel golden suggest N')"
            ]
        return []
    cert = routing.point.certificate
    if cert is None or cert.certified:
        return []
    if not cert.reachable or cert.needed is None:
        return [f"{goal}: no number of golden items would certify it for this model; lower the target"]
    more = max(cert.needed - cert.golden, 1)
    return [
        f"{goal} needs about {cert.needed} golden items for this model; the project has "
        f"{cert.golden}: {more} more (until then every item goes to people)"
    ]


# -- the plan ------------------------------------------------------------------


def plan_project(ctx: Context) -> ProjectPlan:
    """What a run would send, spend and ask of people, measured on a small sample.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["spam", "ham"])
    >>> plan_project(project).people.items
    0
    >>> project.close()
    """
    regular = _regular(ctx)
    items, gold, _short = _golden(ctx)
    labelers = [_plan_labeler(ctx, cfg, regular, (items, gold)) for cfg in ctx.config.labeler]
    people, routing = _plan_people(ctx, *_unrouted(ctx))
    warnings = sanity_checks(ctx, routing=routing)
    # Routing by a sample, a labeler that needs no training runs without golden items.
    sample_only = without_golden(ctx) and not any(cfg.trainable for cfg in ctx.config.labeler)
    if _short is not None and not sample_only:
        warnings.insert(0, _short)
    if not regular and not items and ctx.config.data:
        files = ", ".join(source.path for source in ctx.config.data)
        warnings.insert(
            0,
            f"the project has no items yet, so there is nothing to measure on; 'duolabel run' would "
            f"import {files} first: import them with 'duolabel import FILE' (and --role golden --gold "
            "COLUMN for golden items) to plan on them",
        )
    return ProjectPlan(ctx.config.costs.currency, labelers, people, warnings)
