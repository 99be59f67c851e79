"""The sampling certificate replayed by ``simulate`` (``--sample-share``): people's labels are the
recorded answers, the sample counts in the human share and the cost."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from duolabel.cli import app
from duolabel.config import CostsConfig
from duolabel.ledger import answer_price
from duolabel.simulate import SimulationInput, simulate


def _input(seed: int, *, golden: int = 200, test: int = 2000, worker: float = 0.97) -> SimulationInput:
    rng = np.random.default_rng(seed)

    def part(n: int):
        scores = rng.beta(6, 1, n) * 0.5 + 0.5  # a calibrated binary model
        gold = rng.integers(0, 2, n)
        right = rng.random(n) < scores
        top = np.where(right, gold, 1 - gold)
        probs = np.where(np.arange(2)[None, :] == top[:, None], scores[:, None], 1 - scores[:, None])
        answers = [[(f"w{k}", int(g if rng.random() < worker else 1 - g)) for k in range(3)] for g in gold]
        return probs, gold, answers

    g_probs, g_gold, g_answers = part(golden)
    t_probs, t_gold, t_answers = part(test)
    return SimulationInput(["a", "b"], g_probs, g_gold, g_answers, t_probs, t_gold, t_answers)


def test_the_sample_row_certifies_the_delivered_data_and_counts_its_own_labels():
    met = 0
    for seed in range(10):
        result = simulate(
            _input(seed), costs=CostsConfig(), targets=(0.95,), policies=("threshold",), sample_share=0.1,
            seed=seed,
        )  # fmt: skip
        (row,) = [r for r in result.rows if r.point == "target 0.95 (dataset, sample)"]
        assert row.human_share >= 0.1  # the sample itself goes to people
        assert row.human_answers == round(row.human_share * 2000) * 3  # 3 recorded answers each
        assert row.cost == row.human_answers * answer_price(CostsConfig())
        if np.isfinite(row.threshold):
            assert "the certificate itself cost" in row.guarantee
            assert row.human_share < 0.9  # certified: the model labels a good part
        met += row.hybrid_accuracy >= 0.95
    assert met >= 9
    plain = simulate(_input(0), costs=CostsConfig(), targets=(0.95,), policies=("threshold",))
    assert not any("sample" in r.point for r in plain.rows)


def test_simulate_passes_the_sample_share(tmp_path, monkeypatch):
    from duolabel import simulate as simulation
    from duolabel.errors import ProjectError

    def record(project, answers, **options):
        raise ProjectError(f"sample share {options['sample_share']}")

    monkeypatch.setattr(simulation, "simulate_project", record)
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["init", "p", "-l", "spam", "-l", "ham"]).exit_code == 0
    result = CliRunner().invoke(app, ["simulate", "p", "--sample-share", "0.2"])
    assert "sample share 0.2" in str(result.exception) + result.output
