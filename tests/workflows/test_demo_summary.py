import json
import time
from pathlib import Path

from monai_ssl_plugin.workflows import demo
from monai_ssl_plugin.workflows.few_label import RunResult


def test_summary_pairs_the_twins_per_budget_and_says_when_ssl_is_not_better(tmp_path: Path, capsys):
    ssl, scratch = demo.TRAINERS
    results = [RunResult(ssl, 4, 0, 1, 0.70, None, 3.0, "m"), RunResult(scratch, 4, 0, 1, 0.65, None, 3.0, "m"),
               RunResult(ssl, 1, 0, 0, 0.50, None, 3.0, "m"), RunResult(scratch, 1, 0, 0, 0.55, None, 3.0, "m")]
    summary = demo._summarise(tmp_path, Path("raw"), Path("plans.json"), Path("live.pt"), Path("shipped.pt"),
                              Path("w.pth"), results, {}, time.time(), "cpu")
    out = capsys.readouterr().out
    assert "4 labelled case(s): Dice SSL 0.700 vs scratch 0.650 (+0.050: SSL better)" in out
    assert "1 labelled case(s): Dice SSL 0.500 vs scratch 0.550 (-0.050: SSL NOT better in this run)" in out
    written = json.loads((tmp_path / "summary.json").read_text())
    gains = {k: [round(v, 6) for v in g] for k, g in written["ssl_minus_scratch"].items()}
    assert gains == {"1": [-0.05], "4": [0.05]}
    assert summary["fine_tuned_from"] == "shipped.pt"
