import logging

import torch
from ignite.engine import Engine

from monai_ssl_plugin.engine.handlers import DataWaitHandler, ProgressHandler


def _engine():
    engine = Engine(lambda e, b: {"loss": 0.5 * b, "reconstruction": 0.25 * b})
    engine.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    return engine


def test_epoch_line_has_losses_lr_wait_and_eta(caplog):
    engine = _engine()
    DataWaitHandler(None).attach(engine)
    ProgressHandler().attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_ssl_plugin"):
        engine.run([1.0, 3.0], max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("progress")]
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2 iteration 2/4")
    assert "loss 1 " in lines[0] and "reconstruction 0.5" in lines[0]  # epoch means
    assert "lr 1.00e-02" in lines[0] and "data_wait" in lines[0] and "ETA" in lines[0]
    assert lines[1].endswith("ETA 0:00:00")


def test_quiet_mode_logs_only_at_debug(caplog):
    engine = _engine()
    handler = ProgressHandler(quiet=True)
    handler.attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_ssl_plugin"):
        engine.run([1.0], max_epochs=1)
    assert not [r for r in caplog.records if r.name.endswith("progress")]
    assert handler._bar is None


def test_bar_counts_iterations_from_a_resumed_position(capsys):
    engine = _engine()
    handler = ProgressHandler(mininterval=0)
    handler.attach(engine)
    engine.load_state_dict({"iteration": 2, "epoch_length": 2, "max_epochs": 3})
    import tqdm

    bars = []
    real = tqdm.auto.tqdm

    class Spy(real):
        def __init__(self, *a, **k):
            k["disable"] = False
            super().__init__(*a, **k)
            bars.append(self)

    import monai_ssl_plugin.engine.handlers.progress as progress

    progress.tqdm, saved = Spy, progress.tqdm
    try:
        engine.run([1.0, 2.0])
    finally:
        progress.tqdm = saved
    assert len(bars) == 1 and bars[0].total == 6 and bars[0].n == 6
    assert "loss" in capsys.readouterr().err
