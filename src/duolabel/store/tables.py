"""The project store's tables (SQLAlchemy 2, shared by SQLite and PostgreSQL).

Besides the seven tables of DESIGN.md the store keeps two of its own: ``embeddings``
(the encoder cache, so a re-run never encodes twice) and ``routes`` (each routing
decision with the policy that made it, so the human queue is a query, not state in memory).
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import false, text

__all__ = [
    "Annotation",
    "Annotator",
    "Assignment",
    "Audit",
    "Base",
    "Embedding",
    "ExpertTask",
    "FinalLabel",
    "Invitation",
    "Item",
    "LLMCache",
    "LoginFailure",
    "StagedItem",
    "SyntheticItem",
    "Prediction",
    "Redaction",
    "Route",
    "Run",
    "WebSession",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Item(Base):
    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, index=True, doc="Import order, for stable listing.")
    text: Mapped[str] = mapped_column(Text)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    text_parts: Mapped[dict[str, Any] | None] = mapped_column(
        JSON,
        nullable=True,
        doc="Each of task.text_fields' values as imported, when there are several (``text`` "
        "joins them): what the labeling page shows one block per field.",
    )
    content_hash: Mapped[str] = mapped_column(String(64))
    batch: Mapped[str] = mapped_column(String(200), default="default", index=True)
    role: Mapped[str] = mapped_column(String(16), default="regular", index=True)
    gold_label: Mapped[str | None] = mapped_column(Text, nullable=True)  # an answer: a span list is long
    gold_source: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StagedItem(Base):
    """An item of an import in progress: invisible to every reader until the import, having
    checked the whole file, publishes it into ``items`` (short transactions of a range of
    rows each: issue 12 item 9). Rows of an import whose newest row is old belong to a
    killed import; the next import deletes them."""

    __tablename__ = "staged_items"
    # An import publishes and drops its rows a range of file rows at a time.
    __table_args__ = (Index("ix_staged_items_import_id_ord", "import_id", "ord"),)

    import_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    ord: Mapped[int] = mapped_column(Integer, doc="Order in the file, for the items' seq.")
    text: Mapped[str] = mapped_column(Text)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    text_parts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    batch: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    gold_label: Mapped[str | None] = mapped_column(Text, nullable=True)  # an answer: a span list is long
    gold_source: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Embedding(Base):
    __tablename__ = "embeddings"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Run(Base):
    """One stage run: the ledger behind every cost figure."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("item_id", "labeler", "model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    labeler: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    probs: Mapped[dict[str, Any]] = mapped_column(JSON, doc="Raw probability per label.")
    calibrated: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    label: Mapped[str] = mapped_column(Text, doc="The model's answer (its most probable label).")
    raw_confidence: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    out_of_fold: Mapped[bool] = mapped_column(default=False)
    abstained: Mapped[bool] = mapped_column(
        default=False, server_default=false(), doc="The labeler gave no usable answer; people decide."
    )
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    features: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, nullable=True, doc="Routing features, e.g. the disagreement between ensemble members."
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class LLMCache(Base):
    """LLM responses keyed by a hash of model + prompt + parameters: a re-run costs nothing."""

    __tablename__ = "llm_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def _route_position(context: Any) -> int:
    """A new route's place in the people's queue: its item's import order, unless the route
    says otherwise (the routing stage passes it, so this lookup runs for hand-made rows only)."""
    item_id = context.get_current_parameters()["item_id"]
    return int(context.connection.scalar(select(Item.seq).where(Item.id == item_id)) or 0)


class Route(Base):
    """The routing decision for an item under one policy version."""

    __tablename__ = "routes"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    decision: Mapped[str] = mapped_column(String(16), index=True)  # accept | humans | expert
    overlap: Mapped[int] = mapped_column(Integer, default=0)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    policy_version: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    position: Mapped[int] = mapped_column(
        Integer,
        default=_route_position,
        index=True,
        doc="Order in the people's queue (lowest first): the item's seq, or the place the "
        "active-learning strategy gave it among the waiting items (duolabel.stages.learn).",
    )


def name_key(name: str) -> str:
    """What makes two account names the same name: NFKC-normalised, stripped and case-folded,
    so "Alice", "ALICE" and a fullwidth "Ａlice" are one account.

    Examples
    --------
    >>> name_key(" Ａlice "), name_key("STRASSE") == name_key("straße")
    ('alice', True)
    """
    return unicodedata.normalize("NFKC", name).strip().casefold()


def _name_key_default(context: Any) -> str:
    return name_key(context.get_current_parameters()["name"])


class Annotator(Base):
    __tablename__ = "annotators"
    __table_args__ = (UniqueConstraint("name_key", name="uq_annotators_name_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # Unique, so names are unique case-insensitively; case-folding can make a name up to three
    # times longer ("ﬃ" -> "ffi"), hence the width.
    name_key: Mapped[str] = mapped_column(
        String(300), default=_name_key_default, doc="name_key(name): what login looks up."
    )
    role: Mapped[str] = mapped_column(String(16), default="annotator")
    password_hash: Mapped[str] = mapped_column(String(255))
    # onboarding (taking the exam) | active | suspended | declined (failed the exam twice)
    status: Mapped[str] = mapped_column(String(16), default="active")
    skills: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, doc="Control accuracy and its interval, answer counts (see duolabel.people.qc)."
    )
    flags: Mapped[list[Any]] = mapped_column(
        JSON, default=list, server_default=text("'[]'"), doc="Fraud flags raised by duolabel.people.qc."
    )
    exam_attempt: Mapped[int] = mapped_column(
        Integer, default=0, server_default=text("0"), doc="Exam attempts started (0: none yet)."
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (
        Index("ix_assignments_item_state", "item_id", "state"),
        # "has this person been given this item?" on every next-task
        Index("ix_assignments_annotator_item", "annotator_id", "item_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    # regular | control | exam | audit | escalated
    kind: Mapped[str] = mapped_column(String(16), default="regular")
    # leased | done | expired | skipped
    state: Mapped[str] = mapped_column(String(16), default="leased")
    lease_expires: Mapped[datetime] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Annotation(Base):
    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("item_id", "annotator_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    label: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(
        String(16),
        default="regular",
        server_default="regular",
        doc="regular | control | exam | expert: what the answer was given to.",
    )
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    assignment_id: Mapped[int | None] = mapped_column(ForeignKey("assignments.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    unsure: Mapped[bool | None] = mapped_column(
        nullable=True, doc="True when the person ticked 'unsure' with their answer; else None."
    )
    comment: Mapped[str | None] = mapped_column(Text, nullable=True, doc="The person's comment, if any.")


class FinalLabel(Base):
    __tablename__ = "final_labels"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    label: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), index=True)  # model | humans | fused | expert
    confidence: Mapped[float] = mapped_column(Float)
    votes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, doc="Label -> human votes.")
    n_votes: Mapped[int] = mapped_column(Integer, default=0)
    annotators: Mapped[list[Any]] = mapped_column(JSON, default=list)
    model_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    policy_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    @classmethod
    def from_expert(cls, item_id: str, label: str, *, expert: str | None = None) -> FinalLabel:
        """An expert's label as the item's final label (certain, source ``expert``): a golden
        item's gold label, or the answer ``expert`` gave in the expert queue (one vote).

        Examples
        --------
        >>> row = FinalLabel.from_expert("a1", "spam", expert="erin")
        >>> row.source, row.confidence, row.votes, row.n_votes, row.annotators
        ('expert', 1.0, {'spam': 1}, 1, ['erin'])
        """
        voters = [] if expert is None else [expert]
        return cls(
            item_id=item_id,
            label=label,
            source="expert",
            confidence=1.0,
            votes={label: 1} if voters else {},
            n_votes=len(voters),
            annotators=voters,
            updated_at=utcnow(),
        )


class ExpertTask(Base):
    """An item waiting for an expert: escalated by routing, or drawn for an audit."""

    __tablename__ = "expert_tasks"
    __table_args__ = (
        # One open task per item and reason; done tasks stay as history.
        Index(
            "ux_expert_tasks_open",
            "item_id",
            "reason",
            unique=True,
            sqlite_where=text("state = 'open'"),
            postgresql_where=text("state = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    reason: Mapped[str] = mapped_column(String(16))  # escalated | audit
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open | done
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    annotation_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Invitation(Base):
    """A one-time link that lets its holder create an account with the given role."""

    __tablename__ = "invitations"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True, doc="SHA-256 of the token.")
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("annotators.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    annotator_id: Mapped[int | None] = mapped_column(ForeignKey("annotators.id"), nullable=True)


class LoginFailure(Base):
    """Recent failed logins of one (account name, address) pair (``scope`` "account") or of
    one address (``scope`` "address", ``name`` empty): the counters login throttling takes
    and updates under a row lock (see ``duolabel.people.accounts.log_in``)."""

    __tablename__ = "login_failures"
    __table_args__ = (UniqueConstraint("scope", "name", "address", name="uq_login_failures_scope"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(300), default="")
    address: Mapped[str] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class WebSession(Base):
    """A logged-in browser: the cookie holds a random id, the store its SHA-256."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotators.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class Audit(Base):
    """A shipped final label drawn for an expert audit, as it was when drawn.

    ``weight`` is the number of final labels of its stratum (source and confidence band)
    that each drawn label stands for, so accuracy estimates are unbiased for the whole."""

    __tablename__ = "audits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    label: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    band: Mapped[str] = mapped_column(String(16))
    batch: Mapped[str] = mapped_column(String(200))
    weight: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Redaction(Base):
    """Personal data replaced in an item's text before it went to a remote labeler: where, what
    kind, the placeholder sent instead, and the original (kept only here, on this machine)."""

    __tablename__ = "redactions"
    __table_args__ = (UniqueConstraint("item_id", "start", name="uq_redactions_item_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), index=True)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    placeholder: Mapped[str] = mapped_column(String(64))
    original: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SyntheticItem(Base):
    """An item an LLM generated (its ``items`` row has role ``synthetic``): training data
    only, never golden, control, audit, routed or calibrated. ``label`` is the label it was
    generated for (kept here, not in ``items.gold_label``, so no gold query can meet it)."""

    __tablename__ = "synthetic_items"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.id"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    label: Mapped[str] = mapped_column(String(200), index=True)
    mode: Mapped[str] = mapped_column(String(16), doc="zero-shot | few-shot | taxonomy")
    leaf: Mapped[str | None] = mapped_column(String(200), nullable=True, doc="Taxonomy leaf.")
    logprob: Mapped[float | None] = mapped_column(
        Float, nullable=True, doc="Mean log-probability per generated token, where the backend gives it."
    )
    agreement: Mapped[float | None] = mapped_column(
        Float, nullable=True, doc="The current labeler's probability of the intended label."
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    review: Mapped[str | None] = mapped_column(
        String(8), nullable=True, doc="accepted | rejected by a reviewer (a rejected item never trains)."
    )
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("annotators.id"), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    judged_label: Mapped[str | None] = mapped_column(
        String(200), nullable=True, doc="The LLM judge's label (synthetic.judge), where it judged."
    )
