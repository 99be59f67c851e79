"""Personal data stays on this machine: redaction before an item's text goes to a remote labeler.

With ``privacy.redact`` set, an ``openai`` labeler whose server is not on this machine (or every
``openai`` labeler, with ``privacy.when: always``) never sees the items' own text: each e-mail
address, phone number, ... is replaced by a typed, numbered placeholder (``<EMAIL_1>``; the same
value twice in one item gets the same placeholder), in the items it labels and in the golden
items its prompts show as examples. The mapping from placeholder to original is written to the
store (table ``redactions``) before the text is sent, and nowhere else. In a ``pairwise``
project the text sent is the pair as the LLM judge reads it (the prompt and both responses,
:func:`~duolabel.labelers.llm_pairwise.pair_block`), and the offsets recorded are into that
text in the order shown; each value is recorded once per item although both orders are sent.

Finding the personal data is Microsoft Presidio's job (``presidio-analyzer``): its pattern
recognisers with their checksums and context words (the Luhn check of card numbers, the
``phonenumbers`` parse of phone numbers, the top-level-domain check of e-mail addresses). PERSON
needs a spaCy NER model, and none installs from the package index (only hub downloads, which
duolabel never makes): asking for it without one installed is an error that says so.
Presidio's anonymizer is not used: its operators replace per entity type, without the
per-item numbering and the placeholder-to-original mapping the store keeps.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select

from duolabel.config import LabelerConfig, PrivacyConfig
from duolabel.config.sections import PII_KINDS
from duolabel.context import Context
from duolabel.errors import ConfigError, SetupError
from duolabel.labelers.base import TextItem
from duolabel.store import Store
from duolabel.store.tables import Redaction

__all__ = ["Found", "Redactor", "is_remote", "redacting"]

#: Presidio's entity name -> the placeholder's tag.
_TAGS = {entity: short for short, entity in PII_KINDS.items()}


@dataclass(frozen=True)
class Found:
    """One piece of personal data in a text: ``text[start:end]`` of ``kind`` (short name)."""

    start: int
    end: int
    kind: str


def _offline_domains() -> None:
    # Presidio checks an e-mail address's top-level domain with tldextract, whose first call
    # fetches the public suffix list from the internet (and logs a traceback when it cannot).
    # The snapshot it ships is enough and the text being checked must not trigger a request.
    import tldextract.tldextract as tld

    tld.TLD_EXTRACTOR.suffix_list_urls = ()


@cache
def _recognizers(kinds: tuple[str, ...]) -> list[Any]:
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        raise SetupError(
            "privacy.redact needs Microsoft Presidio: pip install 'duolabel[openai]' "
            "(or pip install presidio-analyzer)"
        ) from None
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        CryptoRecognizer,
        DateRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UrlRecognizer,
        UsSsnRecognizer,
    )

    _offline_domains()
    by_kind: dict[str, Any] = {
        "EMAIL": EmailRecognizer,
        "PHONE": PhoneRecognizer,
        "CREDIT_CARD": CreditCardRecognizer,
        "IBAN": IbanRecognizer,
        "IP_ADDRESS": IpRecognizer,
        "URL": UrlRecognizer,
        "US_SSN": UsSsnRecognizer,
        "CRYPTO": CryptoRecognizer,
        "DATE": DateRecognizer,
    }
    recognizers = [by_kind[k]() for k in kinds if k in by_kind]
    if "PERSON" in kinds:
        recognizers.append(_person_recognizer())
    return recognizers


def _person_recognizer() -> Any:
    import spacy.util

    models = [name for name in spacy.util.get_installed_models() if name.startswith("en_core_web")]
    if not models:
        raise ConfigError(
            "privacy.redact: PERSON needs an English spaCy NER model (en_core_web_sm or larger), and "
            "none is installed; install one from a wheel you trust, or redact only the kinds found "
            f"by pattern: {', '.join(k for k in PII_KINDS if k != 'PERSON')}"
        )
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": models[0]}])
    engine.load()
    return _WithNlp(SpacyRecognizer(supported_entities=["PERSON"]), engine)


class _WithNlp:
    """A recognizer that needs the spaCy analysis of the text, with its engine."""

    def __init__(self, recognizer: Any, engine: Any) -> None:
        self.recognizer, self.engine = recognizer, engine
        self.supported_entities = recognizer.supported_entities

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        artifacts = self.engine.process_text(text, "en")
        return list(self.recognizer.analyze(text, entities, artifacts))


class Redactor:
    """Finds personal data of ``kinds`` (short names of ``privacy.redact``) and replaces it.

    Examples
    --------
    >>> redactor = Redactor(["EMAIL"])
    >>> redactor.redact("Mail ann@example.com, or ann@example.com, or bo@example.org")[0]
    'Mail <EMAIL_1>, or <EMAIL_1>, or <EMAIL_2>'
    """

    def __init__(self, kinds: Sequence[str]) -> None:
        self.kinds = tuple(k.upper() for k in kinds)
        self._entities = [PII_KINDS[k] for k in self.kinds]
        self._recognizers = _recognizers(self.kinds)

    def find(self, text: str) -> list[Found]:
        """The personal data in ``text``, left to right, without overlaps (the longer wins)."""
        hits = []
        for recognizer in self._recognizers:
            wanted = [e for e in self._entities if e in recognizer.supported_entities]
            for result in recognizer.analyze(text, wanted, None) or ():
                hits.append(Found(result.start, result.end, _TAGS[result.entity_type]))
        kept: list[Found] = []
        for hit in sorted(hits, key=lambda h: (h.start, -(h.end - h.start))):
            if not kept or hit.start >= kept[-1].end:
                kept.append(hit)
        return kept

    def redact(self, text: str) -> tuple[str, list[tuple[Found, str]]]:
        """``text`` with each piece of personal data replaced by its placeholder, and the
        pieces with their placeholders."""
        numbers: dict[tuple[str, str], str] = {}
        counts: dict[str, int] = {}
        parts: list[str] = []
        done: list[tuple[Found, str]] = []
        at = 0
        for hit in self.find(text):
            value = text[hit.start : hit.end]
            if (hit.kind, value) not in numbers:
                counts[hit.kind] = counts.get(hit.kind, 0) + 1
                numbers[hit.kind, value] = f"<{hit.kind}_{counts[hit.kind]}>"
            placeholder = numbers[hit.kind, value]
            parts += [text[at : hit.start], placeholder]
            done.append((hit, placeholder))
            at = hit.end
        return "".join([*parts, text[at:]]), done


def _hosts(cfg: LabelerConfig) -> list[str | None]:
    urls = getattr(cfg, "base_url", None)  # one URL, or a fleet's list of them
    return [urlparse(u).hostname if u else None for u in (urls if isinstance(urls, list) else [urls])]


def _loopback(host: str | None) -> bool:
    if host is None:
        return False  # no base_url: OpenAI's own servers
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_remote(cfg: LabelerConfig) -> bool:
    """Whether labeler ``cfg`` sends text off this machine (an openai labeler whose server, or
    one of whose servers, is not on loopback).

    Examples
    --------
    >>> from duolabel.config import OpenAILabelerConfig
    >>> is_remote(OpenAILabelerConfig(backend="openai", model="m", base_url="http://127.0.0.1:8080/v1"))
    False
    >>> is_remote(OpenAILabelerConfig(backend="openai", model="m"))
    True
    """
    return cfg.backend == "openai" and not all(_loopback(h) for h in _hosts(cfg))


def _applies(privacy: PrivacyConfig, cfg: LabelerConfig) -> bool:
    if not privacy.redact or cfg.backend != "openai":
        return False
    return privacy.when == "always" or is_remote(cfg)


def redaction_applies(ctx: Context, cfg: LabelerConfig) -> bool:
    """Whether the project's ``privacy`` settings require labeler ``cfg``'s text to be redacted."""
    return _applies(ctx.config.privacy, cfg)


def redacting(ctx: Context, cfg: LabelerConfig, model: Any) -> Any:
    """``model``, or, when ``privacy`` applies to labeler ``cfg``, ``model`` behind a
    :class:`_Redacting` wrapper that sends only redacted text."""
    if not _applies(ctx.config.privacy, cfg):
        return model
    return _Redacting(model, Redactor(ctx.config.privacy.redact), ctx.store)


def _occurrences(rows: Sequence[Any]) -> list[tuple[str, str, str, int]]:
    """Per redaction row (in text order per item): item, kind, value and which occurrence of
    that value in the item it is."""
    seen: dict[tuple[str, str, str], int] = {}
    out = []
    for row in rows:
        key = (row.item_id, row.kind, row.original)
        seen[key] = seen.get(key, -1) + 1
        out.append((*key, seen[key]))
    return out


class _Redacting:
    """A labeler that redacts the items' text, records what it replaced, then passes the
    redacted items on. Every other attribute is the wrapped labeler's."""

    def __init__(self, model: Any, redactor: Redactor, store: Store) -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_redactor", redactor)
        object.__setattr__(self, "_store", store)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._model, name, value)  # e.g. the label stage's per-run budget

    def _redacted(self, items: Sequence[TextItem], *, record: bool = True) -> list[TextItem]:
        out: list[TextItem] = []
        rows: list[Redaction] = []
        for item in items:
            text, found = self._redactor.redact(item.text)
            out.append(TextItem(item.id, text, item.content_hash))
            rows += [
                Redaction(
                    item_id=item.id,
                    start=hit.start,
                    end=hit.end,
                    kind=hit.kind,
                    placeholder=placeholder,
                    original=item.text[hit.start : hit.end],
                )
                for hit, placeholder in found
            ]
        # Recorded before anything is sent: the store always knows what left the machine.
        ids = sorted({row.item_id for row in rows})
        if ids and record:
            with self._store.write() as session:
                known = session.execute(
                    select(Redaction.item_id, Redaction.start, Redaction.kind, Redaction.original)
                    .where(Redaction.item_id.in_(ids))
                    .order_by(Redaction.item_id, Redaction.start)
                ).all()
                have = {(r.item_id, r.start) for r in known}
                # A value the item already has a row for is not recorded again at another
                # offset: the pair judge sends each pair twice, as shown and swapped
                # (labelers/llm_pairwise.py), the same values at other offsets. Occurrences are
                # counted, so a value twice in one text is still two rows.
                values = _occurrences(known)
                session.add_all(
                    row
                    for row, key in zip(rows, _occurrences(rows), strict=True)
                    if (row.item_id, row.start) not in have and key not in values
                )
        return out

    def fit(self, items: Sequence[TextItem], labels: Sequence[Any], **options: Any) -> Any:
        self._model.fit(self._redacted(items), labels, **options)
        return self

    def predict_proba(self, items: Sequence[TextItem], **options: Any) -> Any:
        return self._model.predict_proba(self._redacted(items), **options)

    def prompts(self, items: Sequence[TextItem]) -> list[str]:
        """The prompts as sent: redacted (what ``duolabel plan`` shows; nothing is sent or stored)."""
        return list(self._model.prompts(self._redacted(items, record=False)))
