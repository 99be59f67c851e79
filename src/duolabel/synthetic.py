"""Synthetic training items: an LLM labeler's model writes items for each label, they are
checked, and they are stored as training data only (issue 16, items 1-3).

Three modes (``duolabel generate --mode``):

- ``zero-shot``: from the task instructions and the label's name and description;
- ``few-shot``: the same with a few golden items of the label as examples (a generated item
  too close to any real item is dropped, so examples are not copied);
- ``taxonomy``: attribute-driven (AttrPrompt, Yu et al. 2023): each label has leaves
  (subtopics, styles, personas) from ``synthetic.taxonomy`` in the project file, else from
  ``synthetic.taxonomy_file``, else asked of the LLM and written to that file for the user
  to edit; items are generated leaf by leaf, round-robin.

Every candidate is checked before it is kept: not empty, no exact (case and spacing
ignored) or embedding near-duplicate (``synthetic.near_duplicate``, the project's encoder)
of a real item or of a kept synthetic one. Kept items are stored at once as items of role
``synthetic`` with a ``synthetic_items`` row (intended label, mode, leaf, the mean
generation log-probability where the backend gives it). Every LLM answer goes to the
response cache as it arrives, and attempts are numbered and seeded, so a killed or
budget-stopped run, run again, replays what it had for free and goes on. Afterwards the
project's first labeler, fitted on the golden items there are, labels the new items: its
probability of the intended label is their ``agreement`` (label consistency). With
``synthetic.judge`` the generating LLM labeler also labels each candidate (the LLM judge,
:mod:`duolabel.synthetic_judge`): one it labels otherwise is flagged (``judged_label``) or,
with ``synthetic.drop_inconsistent``, dropped; ``synthetic.min_logprob`` drops candidates
generated with a lower mean log-probability (SuperGen's filter). The run (kind ``generate``)
records cost, rejections, agreement, the judge's counts and the diversity figures.

Synthetic items never enter a gold, control, audit, routing or calibration query: those
select items by role ``golden``, ``control`` or ``regular``, and the intended label is not
``items.gold_label``. Trainable labelers learn from them (``synthetic.share`` and
``synthetic.weight``; :func:`duolabel.training_data.synthetic_training_items`).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import yaml
from sqlalchemy import func, select, update

from duolabel.config import LabelerConfig, LlamaLabelerConfig, OpenAILabelerConfig
from duolabel.context import Context
from duolabel.core.diversity import (
    coverage,
    distinct_n,
    mean_pairwise_distance,
    near_duplicates,
    normalise_text,
)
from duolabel.core.registry import LABELERS
from duolabel.errors import ConfigError, LabelerError, ProjectError
from duolabel.labelers import build_labeler, encoder_for
from duolabel.labelers.base import TextItem, Usage
from duolabel.labelers.cache import StoreResponseCache, cache_key
from duolabel.labelers.generation import Generated, TextGenerator, generator_for
from duolabel.labelers.privacy import redacting
from duolabel.ledger import ledger_run, model_cost
from duolabel.progress import Reporter, quiet
from duolabel.store import Item, Run, SyntheticItem
from duolabel.synthetic_judge import Judge
from duolabel.synthetic_review import acceptance
from duolabel.training_data import golden_items

__all__ = [
    "MODES",
    "GenerateResult",
    "diversity_figures",
    "generate_synthetic",
    "generation_prompt",
    "synthetic_status",
    "synthetic_summary",
]

Mode = Literal["zero-shot", "few-shot", "taxonomy"]
MODES: tuple[str, ...] = ("zero-shot", "few-shot", "taxonomy")
MAX_TRIES = 4  # attempts per wanted item before a label is given up on (near-duplicates, empties)
MIN_CHARS = 8  # shorter continuations are no items
SEED_STRIDE = 1_000_003  # attempt k of synthetic.seed s samples with seed s * SEED_STRIDE + k


@dataclass
class GenerateResult:
    """What one ``generate`` run did: items kept per label, candidates rejected by reason,
    the checks' figures, the taxonomy used, its cost, and why it stopped early (if it did)."""

    run_id: int
    mode: str
    kept: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    taxonomy: dict[str, list[str]] = field(default_factory=dict)
    cost: float = 0.0
    seconds: float = 0.0
    generation_seconds: float = 0.0  # of which the model spent writing (uncached answers)
    cached: int = 0
    stopped: str | None = None


# -- prompts (pure) ----------------------------------------------------------------


def generation_prompt(
    *,
    instructions: str,
    label: str,
    description: str = "",
    leaf: str | None = None,
    examples: list[str] | None = None,
) -> str:
    """The prompt whose next line is a new item for ``label`` (a base model continues lists).

    Examples
    --------
    >>> p = generation_prompt(instructions="Is the review about a book?", label="book",
    ...                       description="the product is a book", leaf="cookbooks",
    ...                       examples=["Great recipes."])
    >>> p.splitlines()[-3:]
    ['', 'Text: Great recipes.', 'Text:']
    """
    about = f'labelled "{label}"' + (f" ({' '.join(description.split())})" if description else "")
    lines = [" ".join(instructions.split())] if instructions else []
    lines.append(f"Below are new, varied example texts {about}" + (f", about: {leaf}." if leaf else "."))
    lines.append("")
    lines += [f"Text: {' '.join(text.split())}" for text in examples or []]
    lines.append("Text:")
    return "\n".join(lines)


def taxonomy_prompt(*, instructions: str, label: str, description: str, leaves: list[str]) -> str:
    """The prompt whose next line is one more leaf (subtopic, style or persona) of ``label``."""
    about = f'"{label}"' + (f" ({' '.join(description.split())})" if description else "")
    lines = [" ".join(instructions.split())] if instructions else []
    lines += [f"Distinct subtopics, styles and writers of texts labelled {about}:", ""]
    lines += [f"{i + 1}. {leaf}" for i, leaf in enumerate(leaves)]
    lines.append(f"{len(leaves) + 1}.")
    return "\n".join(lines)


# -- the figures (pure) --------------------------------------------------------------


def diversity_figures(
    texts: list[str],
    vectors: np.ndarray,
    labels: list[str],
    *,
    kept: list[tuple[str, str | None]] | None = None,
    taxonomy: dict[str, list[str]] | None = None,
) -> dict[str, float]:
    """distinct-1/2 over all ``texts``, the mean pairwise embedding distance within each
    label (averaged over labels with two or more items) and, with a taxonomy, its coverage.

    Examples
    --------
    >>> v = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> diversity_figures(["a b", "a c"], v, ["x", "x"])
    {'items': 2, 'distinct_1': 0.75, 'distinct_2': 1.0, 'pairwise_distance': 1.0}
    """
    per_label = [
        mean_pairwise_distance(vectors[[i for i, lab in enumerate(labels) if lab == label]])
        for label in dict.fromkeys(labels)
        if labels.count(label) >= 2
    ]
    figures: dict[str, float] = {
        "items": len(texts),
        "distinct_1": round(distinct_n(texts, 1), 4),
        "distinct_2": round(distinct_n(texts, 2), 4),
        "pairwise_distance": round(float(np.mean(per_label)), 4) if per_label else 0.0,
    }
    if taxonomy:
        figures["taxonomy_coverage"] = round(coverage(kept or [], taxonomy), 4)
    return figures


# -- the run ---------------------------------------------------------------------------


def _generating_config(ctx: Context, name: str | None) -> LabelerConfig:
    llm = [c for c in ctx.config.labeler if isinstance(c, (LlamaLabelerConfig, OpenAILabelerConfig))]
    name = name or ctx.config.synthetic.labeler
    if name is not None:
        chosen = [c for c in llm if c.label_name == name]
        if not chosen:
            known = ", ".join(repr(c.label_name) for c in llm) or "none"
            raise ProjectError(
                f"synthetic.labeler / --labeler {name!r}: no llama or openai labeler of that name "
                f"in the project file (it has {known})"
            )
        return chosen[0]
    if not llm:
        raise ProjectError(
            "duolabel generate needs a llama or openai labeler to write with: add one to 'labeler' "
            "in duolabel.yaml (e.g. '- backend: llama'), or name one with --labeler"
        )
    return llm[0]


class _Generation:
    """One run's state: the generator behind the response cache, usage and budget."""

    def __init__(self, ctx: Context, generator: TextGenerator, run: Any) -> None:
        self.ctx = ctx
        self.generator = generator
        self.cache = StoreResponseCache(ctx.store)
        self.run = run
        self.usage: dict[str, float] = {"items": 0, "seconds": 0.0, "input_tokens": 0, "output_tokens": 0}
        self.cached = 0
        self.cost = 0.0
        self.budget = ctx.config.synthetic.budget
        self.judge: Usage | None = None

    def over_budget(self) -> str | None:
        if self.budget is not None and self.cost >= self.budget:
            return (
                f"the budget of {self.budget:g} (synthetic.budget) was reached (cost {self.cost:.4g}); "
                "raise it, or run again to continue: what was generated is kept and not paid twice"
            )
        return None

    def ask(self, prompt: str, *, seed: int, max_tokens: int) -> Generated | None:
        """The continuation (cached, or generated and paid for); None once over budget."""
        temperature = self.ctx.config.synthetic.temperature
        key = cache_key(
            kind="generate", **self.generator.identity, prompt=prompt, seed=seed,
            max_tokens=max_tokens, temperature=temperature,
        )  # fmt: skip
        hit = self.cache.get(key)
        if hit is not None:
            self.cached += 1
            return Generated(text=hit["text"], logprob=hit.get("logprob"))
        if self.over_budget():
            return None
        answer = self.generator.generate(prompt, max_tokens=max_tokens, temperature=temperature, seed=seed)
        self.cache.put(key, answer.as_dict())
        self.usage["items"] += 1
        self.usage["seconds"] += answer.seconds
        self.usage["input_tokens"] += answer.input_tokens
        self.usage["output_tokens"] += answer.output_tokens
        self._record()
        return answer

    def add_judge_usage(self, usage: Usage) -> None:
        """Count the LLM judge's calls so far (``usage`` is its running total) in the run's cost."""
        self.judge = usage
        self._record()

    def total(self) -> dict[str, float]:
        """The run's usage: generation plus the judge's calls."""
        total = dict(self.usage)
        if self.judge is not None:
            total["seconds"] += self.judge.seconds
            total["input_tokens"] += self.judge.input_tokens
            total["output_tokens"] += self.judge.output_tokens
            total["judged"] = self.judge.items
        return total

    def _record(self) -> None:
        total = self.total()
        self.cost = model_cost(self.ctx.config.costs, total)
        with self.ctx.store.write() as session:
            self.run.record(session, total, self.cost)


def _taxonomy(
    ctx: Context, gen: _Generation, labels: list[str], descriptions: dict[str, str]
) -> dict[str, list[str]]:
    """Leaves per label: the project file's, else the taxonomy file's, else the LLM's (written
    to the taxonomy file, where the user may edit them before the next run)."""
    settings = ctx.config.synthetic
    path = ctx.resolve(settings.taxonomy_file)
    from_file: dict[str, list[str]] = {}
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(loaded, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in loaded.values()
        ):
            raise ConfigError(f"{path}: expected 'label: [leaf, ...]' for each label")
        from_file = {str(k): list(v) for k, v in loaded.items()}
    taxonomy: dict[str, list[str]] = {}
    wrote = False
    for label in labels:
        leaves = settings.taxonomy.get(label) or from_file.get(label)
        if not leaves:
            leaves = []
            for attempt in range(settings.leaves_per_label * MAX_TRIES):
                if len(leaves) >= settings.leaves_per_label:
                    break
                prompt = taxonomy_prompt(
                    instructions=ctx.config.task.instructions,
                    label=label,
                    description=descriptions[label],
                    leaves=leaves,
                )
                answer = gen.ask(prompt, seed=settings.seed * SEED_STRIDE + attempt, max_tokens=16)
                if answer is None:
                    break
                leaf = answer.text.strip(" .-*\"'").strip()[:200]
                if leaf and normalise_text(leaf) not in {normalise_text(x) for x in leaves}:
                    leaves.append(leaf)
            from_file[label] = leaves
            wrote = True
        taxonomy[label] = leaves
    if wrote:
        path.write_text(
            "# Taxonomy leaves per label for 'duolabel generate --mode taxonomy': edit freely;\n"
            "# synthetic.taxonomy in duolabel.yaml takes precedence over this file.\n"
            + yaml.safe_dump(from_file, allow_unicode=True, sort_keys=False),
            encoding="utf-8",
        )
    return taxonomy


def _synthetic_id(label: str, text: str) -> str:
    return "synthetic-" + hashlib.sha256(f"{label}\n{normalise_text(text)}".encode()).hexdigest()[:20]


def _real_items(ctx: Context) -> list[TextItem]:
    with ctx.store.read() as session:
        rows = session.execute(
            select(Item.id, Item.text, Item.content_hash).where(Item.role != "synthetic").order_by(Item.seq)
        ).all()
    return [TextItem(r.id, r.text, r.content_hash) for r in rows]


def _stored(ctx: Context) -> list[Any]:
    with ctx.store.read() as session:
        return list(
            session.execute(
                select(
                    Item.id,
                    Item.text,
                    SyntheticItem.label,
                    SyntheticItem.mode,
                    SyntheticItem.leaf,
                    SyntheticItem.review,
                    SyntheticItem.judged_label,
                )
                .join(SyntheticItem, SyntheticItem.item_id == Item.id)
                .order_by(Item.seq)
            ).all()
        )


def generate_synthetic(
    ctx: Context,
    *,
    per_label: int,
    mode: str = "zero-shot",
    labeler: str | None = None,
    progress: Reporter = quiet,
) -> GenerateResult:
    """Generate until each label has ``per_label`` kept synthetic items of ``mode`` (counting
    those kept by earlier runs), check them and store them; see the module docstring.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> project = duolabel.init_project(tempfile.mkdtemp(), labels=["book", "not_book"],
    ...                                 labeler={"backend": "llama"})
    >>> result = generate_synthetic(project, per_label=2)  # doctest: +SKIP
    >>> sorted(result.kept)  # doctest: +SKIP
    ['book', 'not_book']
    """
    if mode not in MODES:
        raise ProjectError(f"--mode {mode!r}: one of {', '.join(MODES)}")
    if per_label < 1:
        raise ProjectError(f"--per-label {per_label}: give at least 1")
    settings = ctx.config.synthetic
    cfg = _generating_config(ctx, labeler)
    model = LABELERS.get(cfg.backend)(ctx, cfg)
    if mode == "few-shot" and redacting(ctx, cfg, model) is not model:
        raise ProjectError(
            f"few-shot generation would send golden items unredacted to {cfg.label_name}'s remote server "
            "(privacy.redact applies to it): use --mode zero-shot or taxonomy"
        )
    task = ctx.config.task
    labels = task.label_names
    descriptions = {spec.name: spec.description for spec in task.labels}
    golden: dict[str, list[str]] = {label: [] for label in labels}
    if mode == "few-shot":
        items, gold = golden_items(ctx, minimum=False)
        for item, label in zip(items, gold, strict=True):
            golden[label].append(item.text)
        empty = [label for label in labels if not golden[label]]
        if empty:
            raise ProjectError(
                "few-shot generation needs golden items of every label; none for "
                f"{', '.join(map(repr, empty))}: add some with "
                "'duolabel import FILE --role golden --gold COLUMN', or use --mode zero-shot"
            )
    started = time.perf_counter()
    config = {
        "labeler_name": cfg.label_name,
        "mode": mode,
        "per_label": per_label,
        "settings": settings.model_dump(),
    }
    with ledger_run(ctx.store, "generate", config) as run:
        gen = _Generation(ctx, generator_for(model, logprobs=settings.min_logprob is not None), run)
        result = GenerateResult(run_id=run.id, mode=mode)
        taxonomy = _taxonomy(ctx, gen, labels, descriptions) if mode == "taxonomy" else {}
        result.taxonomy = taxonomy
        judge = Judge(ctx, cfg) if settings.judge or settings.drop_inconsistent else None
        encoder = encoder_for(ctx)
        plain = copy.copy(encoder)
        plain.cache = None  # candidates are no items yet: the store's cache is keyed by item
        real = _real_items(ctx)
        reference = encoder.encode(real)[0] if real else None
        seen = {normalise_text(item.text) for item in real}
        stored = _stored(ctx)
        kept_texts = [r.text for r in stored]
        kept_vectors = plain.encode([TextItem(r.id, r.text) for r in stored])[0] if stored else None
        seen |= {normalise_text(t) for t in kept_texts}
        stored_ids = {r.id for r in stored}
        rejected: Counter[str] = Counter()
        new: list[tuple[TextItem, str]] = []
        with progress("Generating synthetic items", per_label * len(labels)) as advance:
            for label in labels:
                have = sum(1 for r in stored if r.label == label and r.mode == mode)
                advance(min(have, per_label))
                leaves: list[str | None] = list(taxonomy.get(label) or []) or [None]
                attempt = 0
                while have < per_label and attempt < per_label * MAX_TRIES and not result.stopped:
                    leaf = leaves[attempt % len(leaves)] if mode == "taxonomy" else None
                    shots = golden[label]
                    seed = settings.seed * SEED_STRIDE + attempt
                    if shots:
                        rng = np.random.default_rng(seed)
                        picked = rng.choice(
                            len(shots), size=min(settings.examples, len(shots)), replace=False
                        )
                        shots = [shots[int(i)] for i in picked]
                    prompt = generation_prompt(
                        instructions=task.instructions,
                        label=label,
                        description=descriptions[label],
                        leaf=leaf,
                        examples=shots,
                    )
                    answer = gen.ask(prompt, seed=seed, max_tokens=settings.max_tokens)
                    attempt += 1
                    if answer is None:
                        result.stopped = gen.over_budget()
                        break
                    item_id = _synthetic_id(label, answer.text)
                    if item_id in stored_ids:
                        continue  # kept by an earlier run (counted in ``have``)
                    if len(answer.text) < MIN_CHARS:
                        rejected["empty"] += 1
                        continue
                    if (
                        settings.min_logprob is not None
                        and answer.logprob is not None
                        and answer.logprob < settings.min_logprob
                    ):
                        rejected["low_logprob"] += 1
                        continue
                    if normalise_text(answer.text) in seen:
                        rejected["exact_duplicate"] += 1
                        continue
                    vector = plain.encode([TextItem(item_id, answer.text)])[0]
                    if near_duplicates(vector, settings.near_duplicate, reference=reference)[0]:
                        rejected["near_duplicate_of_real"] += 1
                        continue
                    if (
                        kept_vectors is not None
                        and near_duplicates(vector, settings.near_duplicate, reference=kept_vectors)[0]
                    ):
                        rejected["near_duplicate_of_synthetic"] += 1
                        continue
                    judged = None
                    if judge is not None:
                        agrees, judged = judge.agrees(TextItem(item_id, answer.text), label)
                        gen.add_judge_usage(judge.usage_)
                        if not agrees and settings.drop_inconsistent:
                            rejected["inconsistent"] += 1
                            continue
                    item = _store_item(
                        ctx, run.id, item_id, answer, label=label, mode=mode, leaf=leaf, judged_label=judged
                    )
                    new.append((item, label))
                    stored_ids.add(item_id)
                    seen.add(normalise_text(answer.text))
                    kept_vectors = vector if kept_vectors is None else np.vstack([kept_vectors, vector])
                    have += 1
                    result.kept[label] = result.kept.get(label, 0) + 1
                    advance(1)
        result.rejected = dict(rejected)
        agreement = _agreement(ctx, new)
        stored = _stored(ctx)
        mine = [r for r in stored if r.mode == mode]
        vectors = plain.encode([TextItem(r.id, r.text) for r in mine])[0] if mine else np.zeros((0, 1))
        result.figures = diversity_figures(
            [r.text for r in mine],
            vectors,
            [r.label for r in mine],
            kept=[(r.label, r.leaf) for r in mine],
            taxonomy=taxonomy,
        )
        result.figures.update(agreement)
        if judge is not None:
            result.figures.update(judge.figures())
        result.cost, result.cached = gen.cost, gen.cached
        result.seconds = time.perf_counter() - started
        result.generation_seconds = float(gen.usage["seconds"])
        record = {
            **config,
            "kept": result.kept,
            "rejected": result.rejected,
            "figures": result.figures,
            "taxonomy": taxonomy,
            "cached": gen.cached,
            "stopped": result.stopped,
        }
        with ctx.store.write() as session:
            session.execute(update(Run).where(Run.id == run.id).values(config=record))
            run.record(session, gen.total(), gen.cost)
    return result


def _store_item(
    ctx: Context,
    run_id: int,
    item_id: str,
    answer: Generated,
    *,
    label: str,
    mode: str,
    leaf: str | None,
    judged_label: str | None = None,
) -> TextItem:
    """Write one kept item at once (a killed run keeps it)."""
    from duolabel.io import content_hash

    digest = content_hash(answer.text, {}, "synthetic", None)
    with ctx.store.write() as session:
        seq = (session.scalar(select(func.max(Item.seq))) or 0) + 1
        session.add(
            Item(
                id=item_id,
                seq=seq,
                text=answer.text,
                fields={},
                content_hash=digest,
                batch="synthetic",
                role="synthetic",
            )
        )
        session.flush()
        session.add(
            SyntheticItem(
                item_id=item_id,
                run_id=run_id,
                label=label,
                mode=mode,
                leaf=leaf,
                logprob=answer.logprob,
                judged_label=judged_label,
            )
        )
    return TextItem(item_id, answer.text, digest)


def _agreement(ctx: Context, new: list[tuple[TextItem, str]]) -> dict[str, Any]:
    """Label consistency: the project's first labeler, fitted on the golden items there are,
    labels the new items; its probability of the intended label is stored per item."""
    if not new:
        return {}
    cfg = ctx.config.labeler[0]
    try:
        train, gold = golden_items(ctx, minimum=False)
        model = build_labeler(ctx, cfg)
        if hasattr(model, "fit"):
            model.fit(train, gold)
        probs, _usage = model.predict_proba([item for item, _ in new])
    except LabelerError as exc:
        return {"agreement_note": f"{cfg.label_name} could not check the labels: {exc}"}
    labels = ctx.config.task.label_names
    values: list[float] = []
    agrees: list[bool] = []
    with ctx.store.write() as session:
        for (item, label), row in zip(new, probs, strict=True):
            if np.isnan(row).any():
                continue
            p = float(row[labels.index(label)])
            values.append(p)
            agrees.append(int(np.argmax(row)) == labels.index(label))
            session.execute(update(SyntheticItem).where(SyntheticItem.item_id == item.id).values(agreement=p))
    if not values:
        return {"agreement_note": f"{cfg.label_name} abstained on every new item"}
    return {
        "agreement_labeler": cfg.label_name,
        "agreement_mean": round(float(np.mean(values)), 4),
        "agreement_share": round(float(np.mean(agrees)), 4),
    }


def synthetic_summary(ctx: Context) -> dict[str, Any] | None:
    """The synthetic items kept per label, mode and taxonomy leaf, the latest finished
    ``generate`` run's figures, the latest taxonomy used and the reviewers' acceptance rate
    per label and per leaf (:func:`duolabel.synthetic_review.acceptance`); None when there
    are none."""
    stored = _stored(ctx)
    if not stored:
        return None
    with ctx.store.read() as session:
        runs = list(
            session.scalars(
                select(Run).where(Run.kind == "generate", Run.status == "done").order_by(Run.id.desc())
            )
        )
    run = runs[0] if runs else None
    with_taxonomy = next((r for r in runs if r.config.get("taxonomy")), None)
    counts = Counter((r.label, r.mode, r.leaf or "") for r in stored)
    return {
        "items": len(stored),
        "by_label": dict(Counter(r.label for r in stored)),
        "leaves": [{"label": a, "mode": b, "leaf": c, "items": n} for (a, b, c), n in sorted(counts.items())],
        "figures": run.config.get("figures", {}) if run else {},
        "taxonomy": with_taxonomy.config["taxonomy"] if with_taxonomy else {},
        "review": acceptance(stored),
        "judge_flagged": sum(1 for r in stored if r.judged_label is not None and r.judged_label != r.label),
    }


def synthetic_status(ctx: Context) -> str:
    """One line for ``duolabel status``: the synthetic items kept per label, the latest run's
    checks and its taxonomy with the items kept per leaf; empty when there are none.

    Examples
    --------
    >>> import duolabel, tempfile
    >>> synthetic_status(duolabel.init_project(tempfile.mkdtemp()))
    ''
    """
    summary = synthetic_summary(ctx)
    if summary is None:
        return ""
    labels = ", ".join(f"{label} {n}" for label, n in summary["by_label"].items())
    text = f"{summary['items']} synthetic training items ({labels}), never golden, routed or calibrated"
    if summary["figures"]:
        text += "; latest run: " + ", ".join(f"{k} {v}" for k, v in summary["figures"].items())
    if summary["judge_flagged"]:
        text += f"; {summary['judge_flagged']} labelled otherwise by the LLM judge (flagged)"
    review = summary["review"]
    if review["reviewed"]:
        text += (
            f"; reviewed {review['reviewed']}, accepted {review['accepted']} ("
            + ", ".join(f"{r['label']} {r['rate']:.0%}" for r in review["by_label"])
            + ")"
        )
    per_leaf = {(r["label"], r["leaf"]): r["items"] for r in summary["leaves"] if r["mode"] == "taxonomy"}
    if summary["taxonomy"]:
        text += "; taxonomy: " + "; ".join(
            f"{label}: " + ", ".join(f"{leaf} ({per_leaf.get((label, leaf), 0)})" for leaf in leaves)
            for label, leaves in summary["taxonomy"].items()
        )
    return text
