"""Where a fitted labeler predicts: the ``ray`` engine (``labeler.engine: ray``).

The labeling stage cuts its work into batches and commits each batch's predictions with its
share of the ledger; an engine only maps the labeler's batch function
(``predict_proba``) over those batches. The local engine is the stage's own loop; this
module holds the Ray one, which streams the batches through a Ray Data pipeline
(:func:`ray.data.from_items` then :meth:`~ray.data.Dataset.map_batches` with a class-based
UDF holding one copy of the fitted labeler per worker, ``concurrency`` bounded) and hands
each finished batch back to the driver, which writes it to the store as the local path
does. Nothing on a worker touches the store, so a worker may run on another machine:

- the labeler travels pickled (cloudpickle), with what it reloads lazily (the sentence
  encoder, the llama.cpp model) left behind and every store-bound embedding cache swapped
  for a worker-side one (:class:`_WorkerCache`);
- a batch travels with the vectors the store already holds for its items (a retrained head
  re-encodes nothing), and comes back with the vectors its worker computed, which the driver
  writes to the ``embeddings`` table before the batch's predictions (the local order), so a
  killed job re-encodes nothing it stored and re-predicts no committed batch.

Ray is imported here only, and only when the engine is used.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from duolabel.errors import SetupError
from duolabel.labelers.base import TextItem, Usage
from duolabel.labelers.embedding import StoreEmbeddingCache
from duolabel.store import Store

__all__ = ["RayEngine", "labeling_engine"]

K = TypeVar("K")

#: Attributes a labeler reloads on first use (``_load_encoder``, ``_load``): never shipped.
_RELOADED = ("_encoder", "_llm")


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # the engine's pipeline
    except ModuleNotFoundError:
        raise SetupError("labeler.engine 'ray' needs Ray Data: pip install 'duolabel[ray]'") from None
    return ray


def labeling_engine(cfg: Any) -> RayEngine | None:
    """The engine of one ``labeler`` entry: a :class:`RayEngine`, or None for the stage's
    local loop (``engine: local``, and every backend without an ``engine`` setting)."""
    if getattr(cfg, "engine", "local") != "ray":
        return None
    return RayEngine(
        address=cfg.ray_address, workers=cfg.ray_workers, cpus_per_worker=cfg.ray_cpus_per_worker
    )


# -- the worker side ----------------------------------------------------------

#: This process's worker caches by encoder name (one per name: same name, same vectors).
_WORKER_CACHES: dict[str, _WorkerCache] = {}


class _WorkerCache:
    """A worker's stand-in for a :class:`StoreEmbeddingCache`: it answers from the vectors
    its batch brought and records what the labeler encodes, for the driver to store."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.start({})

    def start(self, known: dict[str, tuple[str, bytes]]) -> None:
        self.known = known
        self.new: list[tuple[TextItem, bytes]] = []

    def get(self, items: Sequence[TextItem]) -> dict[str, np.ndarray]:
        found = {}
        for item in items:
            digest, blob = self.known.get(item.id, ("", b""))
            if blob and digest == item.content_hash:
                found[item.id] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, items: Sequence[TextItem], vectors: np.ndarray) -> None:
        for item, vector in zip(items, vectors, strict=True):
            blob = np.asarray(vector, dtype=np.float32).tobytes()
            self.known[item.id] = (item.content_hash, blob)
            self.new.append((item, blob))


def _worker_cache(model: str) -> _WorkerCache:
    return _WORKER_CACHES.setdefault(model, _WorkerCache(model))


def _restore(cls: Any, state: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


class _Predictor:
    """The Ray Data UDF: one fitted labeler per worker, one batch per call."""

    def __init__(self, shipped: list[Any], threads: int) -> None:
        import ray
        import torch

        torch.set_num_threads(threads)  # the worker's CPUs, not every core of its machine
        self.model = pickle.loads(ray.get(shipped[0]))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = []
        for payload in batch["payload"]:
            items, known = pickle.loads(payload)
            for name, cache in _WORKER_CACHES.items():
                cache.start(dict(known.get(name, {})))
            probs, usage = self.model.predict_proba(items)
            new = {name: cache.new for name, cache in _WORKER_CACHES.items() if cache.new}
            out.append(pickle.dumps((np.asarray(probs, dtype=float), usage, new)))
        return {"index": batch["index"], "result": np.array(out, dtype=object)}


# -- the driver side ----------------------------------------------------------


class _Shipper:
    """Pickles a fitted labeler for the workers and notes the store caches it swapped."""

    def __init__(self) -> None:
        self.caches: dict[str, StoreEmbeddingCache] = {}

    def dumps(self, model: Any) -> bytes:
        from ray import cloudpickle

        shipper = self

        class Pickler(cloudpickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                if isinstance(obj, StoreEmbeddingCache):
                    shipper.caches.setdefault(obj.model, obj)
                    return _worker_cache, (obj.model,)
                if isinstance(obj, Store):
                    raise SetupError(
                        f"labeler.engine 'ray': {type(model).__name__} holds the project store, "
                        "which cannot travel to a Ray worker; use engine: local"
                    )
                state = getattr(obj, "__dict__", None)
                if (
                    state
                    and type(obj).__module__.startswith("duolabel.")
                    and any(state.get(name) is not None for name in _RELOADED)
                ):
                    kept = {**state, **{name: None for name in _RELOADED if name in state}}
                    return _restore, (type(obj), kept)
                return super().reducer_override(obj)

        buffer = io.BytesIO()
        Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(model)
        return buffer.getvalue()

    def known(self, items: Sequence[TextItem]) -> dict[str, dict[str, tuple[str, bytes]]]:
        """The vectors the store holds for ``items``, by encoder name."""
        out = {}
        for name, cache in self.caches.items():
            found = cache.get(items)
            if found:
                hashes = {item.id: item.content_hash for item in items}
                out[name] = {i: (hashes[i], v.astype(np.float32).tobytes()) for i, v in found.items()}
        return out

    def store(self, new: dict[str, list[tuple[TextItem, bytes]]]) -> None:
        """Write the vectors a worker computed to the store (the local path's ``cache.put``)."""
        for name, pairs in new.items():
            vectors = np.vstack([np.frombuffer(blob, dtype=np.float32) for _, blob in pairs])
            self.caches[name].put([item for item, _ in pairs], vectors)


class RayEngine:
    """Predicts item batches on Ray Data workers and returns them to the driver.

    Parameters
    ----------
    address : str, optional
        The Ray cluster's address; None joins the Ray this process started (or starts a
        local one with ``ray.init()``).
    workers : int, optional
        Model copies at once (Ray Data's ``concurrency``); None: the cluster's CPUs divided
        by ``cpus_per_worker``.
    cpus_per_worker : int
        CPUs each copy reserves, and its torch threads.

    Examples
    --------
    >>> engine = RayEngine(workers=1)
    >>> engine.cpus_per_worker
    1
    """

    def __init__(self, *, address: str | None = None, workers: int | None = None, cpus_per_worker: int = 1):
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker

    def _start(self) -> Any:
        ray = _import_ray()
        if not ray.is_initialized():
            # Ray's own INFO lines and progress bars would interleave with ours.
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        return ray

    def predict(
        self, model: Any, batches: Sequence[tuple[Sequence[TextItem], K]]
    ) -> Iterator[tuple[Sequence[TextItem], K, np.ndarray, Usage]]:
        """``model.predict_proba`` over ``batches`` (items and a key each), yielded as each
        batch finishes (in any order), with the vectors its worker encoded already stored."""
        if not batches:
            return
        ray = self._start()
        shipper = _Shipper()
        shipped = shipper.dumps(model)
        rows = [
            {"index": i, "payload": pickle.dumps((list(items), shipper.known(items)))}
            for i, (items, _key) in enumerate(batches)
        ]
        workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // self.cpus_per_worker)
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _Predictor,
            # The labeler goes to the object store once, and its reference, inside a list
            # (which Ray leaves unresolved), is what each worker is constructed with: a
            # restarted worker fetches it again while this driver holds it (Ray issue 53727).
            fn_constructor_kwargs={"shipped": [ray.put(shipped)], "threads": self.cpus_per_worker},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
            num_cpus=self.cpus_per_worker,
        )
        for row in dataset.iter_rows():
            items, key = batches[int(row["index"])]
            probs, usage, new = pickle.loads(row["result"])
            shipper.store(new)
            yield items, key, probs, usage
