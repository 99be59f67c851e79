"""Recorded human answers from elsewhere (Toloka, MTurk, Label Studio exports) written into
the store as the answers of imported workers, so aggregation, agreement, quality control,
simulation and the loop use them like answers given in the web app.

An imported worker is an account that cannot log in: its password hash is a marker no
password verifies against. A name that belongs to a login account is refused, so imported
answers are never credited to a real person.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select

from duolabel.errors import DataError, Problem
from duolabel.people.assignments import GOLD_ROLES
from duolabel.store import Annotation, Annotator, Item, Store

__all__ = ["IMPORTED", "ImportedAnswers", "record_imported_answers"]


class Answer(Protocol):
    """One checked answer (:class:`duolabel.io.Answer` is one): where it was in the file,
    the item, the worker's name, the label and the seconds spent (or None)."""

    @property
    def row(self) -> int: ...
    @property
    def item(self) -> str: ...
    @property
    def worker(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def seconds(self) -> float | None: ...


# Not an argon2 hash: verification of any password against it fails.
IMPORTED = "!imported"


@dataclass
class ImportedAnswers:
    """What an answers import did: rows read, answers added, already present, workers named."""

    file: str
    rows: int = 0
    added: int = 0
    unchanged: int = 0
    workers: int = 0
    new_workers: int = 0


def record_imported_answers(store: Store, answers: Sequence[Answer], *, source: str) -> ImportedAnswers:
    """Write checked answers (see :func:`duolabel.io.read_answers`) in one transaction;
    a conflict with what is stored (another label from the same worker, a login account's
    name) is reported per row and nothing is written."""
    result = ImportedAnswers(file=source, rows=len(answers))
    names = sorted({a.worker for a in answers})
    result.workers = len(names)
    problems: list[Problem] = []
    with store.write() as session:
        accounts = {a.name: a for a in session.scalars(select(Annotator).where(Annotator.name.in_(names)))}
        for answer in answers:
            account = accounts.get(answer.worker)
            if account is not None and account.password_hash != IMPORTED:
                problems.append(
                    Problem(
                        source,
                        answer.row,
                        "worker",
                        f"{answer.worker!r} is a login account of this project; "
                        "give imported workers their own names",
                    )
                )
        for name in names:
            if name not in accounts:
                accounts[name] = Annotator(
                    name=name, role="annotator", password_hash=IMPORTED, status="active", skills={}, flags=[]
                )
                session.add(accounts[name])
                result.new_workers += 1
        session.flush()
        ids = {a.id: name for name, a in accounts.items()}
        stored = {
            (item_id, ids[annotator_id]): label
            for item_id, annotator_id, label in session.execute(
                select(Annotation.item_id, Annotation.annotator_id, Annotation.label).where(
                    Annotation.annotator_id.in_(list(ids))
                )
            )
        }
        gold = set(session.scalars(select(Item.id).where(Item.role.in_(GOLD_ROLES))))
        fresh: list[Annotation] = []
        for answer in answers:
            before = stored.get((answer.item, answer.worker))
            if before == answer.label:
                result.unchanged += 1
            elif before is not None:
                problems.append(
                    Problem(
                        source,
                        answer.row,
                        "label",
                        f"{answer.worker!r} already answered {answer.item!r} with {before!r}",
                    )
                )
            else:
                fresh.append(
                    Annotation(
                        item_id=answer.item,
                        annotator_id=accounts[answer.worker].id,
                        label=answer.label,
                        kind="control" if answer.item in gold else "regular",
                        seconds=answer.seconds,
                    )
                )
        if problems:
            # Raising inside the transaction rolls back the workers created above.
            raise DataError(problems)
        session.add_all(fresh)
        result.added = len(fresh)
    return result
