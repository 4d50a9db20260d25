import logging
import math

import pytest
import torch
from ignite.engine import Engine

from monai_ssl_plugin.engine.handlers import CollapseHandler
from monai_ssl_plugin.errors import PluginError

LOGGER = "monai_ssl_plugin.engine.handlers.collapse"


class FakePretext(torch.nn.Module):
    """Exposes whatever embeddings / teacher probabilities the test asks for."""

    def __init__(self, kind: str, dim: int = 16, k: int = 8):
        super().__init__()
        self.kind, self.dim, self.k = kind, dim, k
        self.last_embeddings = None
        self.last_teacher_probs = None

    def step(self):
        if self.kind == "constant":
            self.last_embeddings = torch.ones(4, self.dim)
        elif self.kind == "healthy":
            self.last_embeddings = torch.randn(4, self.dim)
        elif self.kind == "uniform_teacher":
            self.last_embeddings = torch.randn(4, self.dim)
            self.last_teacher_probs = torch.full((4, self.k), 1.0 / self.k)


def _run(pretext, handler, iterations):
    def step(engine, batch):
        pretext.step()
        return {"loss": 1.0}

    engine = Engine(step)
    handler.attach(engine)
    engine.run(range(iterations), max_epochs=1)
    return engine


def test_warns_on_constant_embeddings(caplog):
    pretext = FakePretext("constant")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        engine = _run(pretext, CollapseHandler(pretext, every_n=2), 4)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "embedding collapse" in warnings[0].getMessage()
    assert "iteration 2" in warnings[0].getMessage() and "Fix:" in warnings[0].getMessage()
    assert engine.state.metrics["collapse/embedding_std"] == pytest.approx(0.0, abs=1e-6)
    assert engine.state.metrics["collapse/effective_rank"] == pytest.approx(1.0, abs=1e-4)
    assert engine.state.collapse.collapsed
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith("collapse check at iteration 2: embedding_std 0") for m in infos)


def test_healthy_embeddings_do_not_warn(caplog):
    torch.manual_seed(0)
    pretext = FakePretext("healthy")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        engine = _run(pretext, CollapseHandler(pretext, every_n=4), 16)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert engine.state.metrics["collapse/embedding_std_ratio"] > 0.8
    assert engine.state.metrics["collapse/effective_rank"] > 8
    assert not engine.state.collapse.collapsed


def test_stops_after_patience_when_asked():
    pretext = FakePretext("constant")
    handler = CollapseHandler(pretext, every_n=2, stop_on_collapse=True, patience=2)
    with pytest.raises(PluginError, match="collapse at iteration 4") as err:
        _run(pretext, handler, 10)
    assert "\n" not in str(err.value) and handler.collapsed_in_a_row == 2


def test_warmup_checks_log_but_never_warn(caplog):
    pretext = FakePretext("constant")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _run(pretext, CollapseHandler(pretext, every_n=2, warmup_iterations=5, stop_on_collapse=True,
                                      patience=1), 4)
    ours = [r for r in caplog.records if r.name == LOGGER]  # other loggers (ignite's) may propagate too
    assert not [r for r in ours if r.levelno >= logging.WARNING]
    assert len([r for r in ours if r.levelno == logging.INFO]) == 2


def test_dino_teacher_entropy_is_checked(caplog):
    torch.manual_seed(0)
    pretext = FakePretext("uniform_teacher", k=8)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        engine = _run(pretext, CollapseHandler(pretext, every_n=2), 2)
    assert engine.state.metrics["collapse/teacher_entropy"] == pytest.approx(math.log(8), rel=1e-5)
    assert "uniform teacher collapse" in caplog.records[0].getMessage()


def test_pretext_taken_from_the_trainer_and_tensorboard(tmp_path):
    from monai_ssl_plugin.backbones import create_backbone
    from monai_ssl_plugin.engine import SSLTrainer
    from monai_ssl_plugin.pretext import create_pretext

    torch.manual_seed(0)
    torch.set_num_threads(1)
    pretext = create_pretext("byol", backbone=create_backbone("nnunet_plain_tiny"), hidden_dim=32, projection_dim=16)
    data = [{"image": torch.randn(2, 1, 16, 16, 16)}] * 4
    handler = CollapseHandler(every_n=2, log_dir=str(tmp_path / "tb"))
    trainer = SSLTrainer("cpu", 1, data, pretext, torch.optim.Adam(pretext.parameters(), 1e-3),
                         train_handlers=[handler])
    trainer.run()
    assert set(handler.last_report.metrics) == {"embedding_std", "embedding_std_ratio", "effective_rank"}
    assert trainer.state.metrics["collapse/effective_rank"] >= 1.0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_pretext_without_embeddings_is_skipped():
    pretext = FakePretext("none")  # exposes None
    engine = _run(pretext, CollapseHandler(pretext, every_n=1), 3)
    assert not any(k.startswith("collapse/") for k in engine.state.metrics)


def test_every_n_must_be_positive():
    with pytest.raises(ValueError):
        CollapseHandler(every_n=0)
