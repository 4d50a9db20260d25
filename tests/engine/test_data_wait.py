import json
import time

import pytest
from ignite.engine import Engine

from monai_ssl_plugin.engine.handlers import DataWaitHandler


class SlowLoader:
    """Each batch takes ``delay`` seconds to produce."""

    def __init__(self, n, delay):
        self.n, self.delay = n, delay

    def __len__(self):
        return self.n

    def __iter__(self):
        for i in range(self.n):
            time.sleep(self.delay)
            yield i


def _engine(compute_s):
    def step(engine, batch):
        time.sleep(compute_s)
        return {"loss": 1.0}

    return Engine(step)


def test_records_wait_and_step_per_iteration(tmp_path):
    engine = _engine(0.01)
    handler = DataWaitHandler(tmp_path)
    handler.attach(engine)
    engine.run(SlowLoader(3, 0.03), max_epochs=2)
    rows = (tmp_path / "timing.csv").read_text().splitlines()
    assert rows[0] == "iteration,wait_s,step_s" and [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4, 5, 6]
    for row in rows[1:]:
        _, wait, step = map(float, row.split(","))
        assert 0.025 < wait < step and step >= wait + 0.009
    summary = engine.state.data_timing
    assert summary["steps"] == 6
    assert summary["wait_share"] == pytest.approx(0.75, abs=0.15)  # 30 ms of data per 40 ms step
    assert json.loads((tmp_path / "timing_summary.json").read_text()) == summary


def test_fast_loader_has_small_share_and_memory_only_mode():
    engine = _engine(0.02)
    handler = DataWaitHandler(None)
    handler.attach(engine)
    engine.run(list(range(5)), max_epochs=1)
    assert engine.state.data_timing["steps"] == 5
    assert engine.state.data_timing["wait_share"] < 0.1
    assert len(handler.rows) == 5


def test_resumed_run_keeps_earlier_rows(tmp_path):
    (tmp_path / "timing.csv").write_text("iteration,wait_s,step_s\n1,0.1,0.2\n2,0.1,0.2\n3,0.1,0.2\n")
    engine = _engine(0.0)
    DataWaitHandler(tmp_path).attach(engine)
    engine.load_state_dict({"iteration": 2, "epoch_length": 4, "max_epochs": 1})  # as a resume leaves the state
    engine.run(list(range(4)))
    iterations = [int(r.split(",")[0]) for r in (tmp_path / "timing.csv").read_text().splitlines()[1:]]
    assert iterations == [1, 2, 3, 4]  # row 3 of the crashed run was replaced by the resumed run's
