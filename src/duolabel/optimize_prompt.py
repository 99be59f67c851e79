"""``duolabel optimize-prompt``: search the prompt of a project's LLM labeler on its golden
items (:mod:`duolabel.labelers.prompt_search`) and keep every candidate with its score.

The result is a JSON file ``prompts/<labeler>-<UTC time>.json`` in the project folder: every
candidate with its fold scores, the before and after figures and the chosen prompt. Nothing
in the project changes until the labeler entry names the file (``prompt:``); the chosen
instructions and demonstrations then enter the labeler's version, so its next ``label`` run
is a new labeler version. The search is recorded in the runs ledger (kind
``optimize-prompt``) with the file, the versions before and after and the figures.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from duolabel.config import LlamaLabelerConfig, OpenAILabelerConfig
from duolabel.context import Context
from duolabel.errors import ProjectError
from duolabel.labelers import build_labeler
from duolabel.labelers.prompt_search import PromptSearch, planned_calls, search_prompt
from duolabel.ledger import ledger_run
from duolabel.progress import Reporter, quiet
from duolabel.training_data import golden_items

__all__ = ["PromptOptimization", "optimize_prompt"]

#: The default cap on LLM calls (items scored plus instructions generated).
MAX_CALLS = 1000


@dataclass
class PromptOptimization:
    """What ``optimize-prompt`` did: the labeler, the file it wrote, the search, and the
    labeler's version with the configured prompt and with the chosen one."""

    labeler: str
    file: Path
    search: PromptSearch
    version_before: str
    version_after: str


def _llm_entry(ctx: Context, name: str | None) -> LlamaLabelerConfig | OpenAILabelerConfig:
    entries = [c for c in ctx.config.labeler if isinstance(c, LlamaLabelerConfig | OpenAILabelerConfig)]
    names = [c.label_name for c in entries]
    if name is not None:
        found = [c for c in entries if c.label_name == name]
        if not found:
            raise ProjectError(
                f"--labeler {name}: no llama or openai labeler of that name in duolabel.yaml "
                f"(there are: {', '.join(names) or 'none'})"
            )
        return found[0]
    if len(entries) != 1:
        raise ProjectError(
            "optimize-prompt needs a llama or openai labeler in duolabel.yaml"
            if not entries
            else f"several LLM labelers ({', '.join(names)}): choose one with --labeler NAME"
        )
    return entries[0]


def optimize_prompt(
    ctx: Context,
    *,
    labeler: str | None = None,
    max_calls: int = MAX_CALLS,
    folds: int = 3,
    reporter: Reporter = quiet,
) -> PromptOptimization:
    """Search instructions x demonstrations for one LLM labeler and write them all to
    ``prompts/``; the project file is not changed.

    Examples
    --------
    >>> result = optimize_prompt(project.ctx, max_calls=300)  # doctest: +SKIP
    >>> result.search.chosen.mean("accuracy") >= result.search.before.mean("accuracy")  # doctest: +SKIP
    True
    """
    cfg = _llm_entry(ctx, labeler)
    model = build_labeler(ctx, cfg)
    items, gold = golden_items(ctx)
    model.fit(items, gold)
    version_before = model.version_
    descriptions = [spec.description for spec in ctx.config.task.labels]
    total = planned_calls(
        len(items),
        labels=model.labels,
        instructions=model.instructions,
        few_shot=model.few_shot,
        max_calls=max_calls,
    )
    config: dict[str, Any] = {"labeler": cfg.label_name, "max_calls": max_calls, "folds": folds}
    with ledger_run(ctx.store, "optimize-prompt", config) as run:
        with reporter(f"optimizing the {cfg.label_name} prompt", total) as advance:
            found = search_prompt(
                model,
                items,
                gold,
                descriptions=descriptions,
                generate=model.complete,
                folds=folds,
                max_calls=max_calls,
                progress=advance,
            )
        model.fit(items, gold)  # the search left it configured with the chosen prompt
        version_after = model.version_
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.label_name)
        file = ctx.path / "prompts" / f"{safe}-{stamp}.json"
        file.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "labeler": cfg.label_name,
            "created": stamp,
            "golden": len(items),
            "max_calls": max_calls,
            "version_before": version_before,
            "version_after": version_after,
            **found.to_dict(),
        }
        file.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        summary = {
            "file": str(file.relative_to(ctx.path)),
            "version_before": version_before,
            "version_after": version_after,
            "calls": found.calls,
            "candidates": len(found.candidates),
            "chosen": found.chosen.name,
            "before": {k: found.before.mean(k) for k in ("accuracy", "ece", "nll")},
            "after": {k: found.chosen.mean(k) for k in ("accuracy", "ece", "nll")},
        }
        with ctx.store.write() as session:
            run.record(session, summary, 0.0)
    return PromptOptimization(cfg.label_name, file, found, version_before, version_after)
