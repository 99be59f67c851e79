from __future__ import annotations

import pytest
from sqlalchemy import select

from duolabel.config import CostsConfig
from duolabel.ledger import cost_summary, ledger_run, model_cost
from duolabel.store import Run, open_store


def test_model_cost_adds_compute_and_tokens():
    costs = CostsConfig(compute_hour=3.6, llm_input_per_million=2.0, llm_output_per_million=10.0)
    usage = {"seconds": 10.0, "input_tokens": 500_000, "output_tokens": 100_000}
    assert model_cost(costs, usage) == pytest.approx(0.01 + 1.0 + 1.0)


def test_ledger_records_done_failed_and_interrupted_runs(tmp_path, database_url):
    store = open_store(database_url, tmp_path)
    costs = CostsConfig(compute_hour=3600.0)
    with ledger_run(store, "label", {"x": 1}) as run, store.write() as session:
        run.record(session, {"seconds": 0.5}, model_cost(costs, {"seconds": 0.5}))
    with pytest.raises(ValueError), ledger_run(store, "label", {}):
        raise ValueError("bad input")
    # A run left 'running' by a killed process is marked when the next one starts.
    with store.write() as session:
        session.add(Run(kind="route", status="running"))
    with ledger_run(store, "route", {}):
        pass
    with store.read() as session:
        runs = [(r.kind, r.status, r.cost) for r in session.scalars(select(Run).order_by(Run.id))]
    assert runs == [
        ("label", "done", 0.5),
        ("label", "failed", 0.0),
        ("route", "interrupted", 0.0),
        ("route", "done", 0.0),
    ]
    summary = cost_summary(store, costs)
    assert summary.model == pytest.approx(0.5) and summary.humans == 0 and summary.total == pytest.approx(0.5)
    store.close()
