"""Response caches for LLM labelers: a re-run of the same prompt costs nothing."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from duolabel.store import LLMCache, Store

__all__ = ["MemoryResponseCache", "ResponseCache", "StoreResponseCache", "cache_key"]


def cache_key(**parts: Any) -> str:
    """A stable key for model + prompt + parameters."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ResponseCache(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...
    def put(self, key: str, response: dict[str, Any]) -> None: ...


class MemoryResponseCache:
    def __init__(self) -> None:
        self._data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self._data.get(key)

    def put(self, key: str, response: dict[str, Any]) -> None:
        self._data[key] = response


class StoreResponseCache:
    """Responses kept in the project store (table ``llm_cache``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, key: str) -> dict[str, Any] | None:
        with self.store.read() as session:
            row = session.get(LLMCache, key)
            return row.response if row is not None else None

    def put(self, key: str, response: dict[str, Any]) -> None:
        with self.store.write() as session:
            session.merge(LLMCache(key=key, response=response))
