"""``nnUNet_SSL_final_validation=0`` skips nnU-Net's val-case prediction after training, nothing else."""
import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.nnunet import trainers
from monai_ssl_plugin.nnunet.trainers import nnUNetTrainerSSL


class Called(Exception):
    pass


def _trainer(flag: bool) -> nnUNetTrainerSSL:
    t = object.__new__(nnUNetTrainerSSL)  # no plans needed for this method
    t.final_validation = flag
    t.logged = []
    t.print_to_log_file = lambda *a, **k: t.logged.append(" ".join(map(str, a)))
    return t


def test_skipped_only_when_asked(monkeypatch):
    def nnunet_validation(self, save_probabilities=False):
        raise Called
    monkeypatch.setattr(nnUNetTrainer, "perform_actual_validation", nnunet_validation)
    skipped = _trainer(False)
    skipped.perform_actual_validation()
    assert any("final validation skipped" in m for m in skipped.logged)
    with pytest.raises(Called):
        _trainer(True).perform_actual_validation()


@pytest.mark.parametrize("value, expected", [("", True), ("1", True), ("0", False)])
def test_environment_values(monkeypatch, value, expected):
    monkeypatch.setenv(trainers.ENV_FINAL_VALIDATION, value)
    assert trainers._final_validation() is expected


def test_bad_value_is_one_line(monkeypatch):
    monkeypatch.setenv(trainers.ENV_FINAL_VALIDATION, "no")
    with pytest.raises(PluginError, match="is not 0 or 1"):
        trainers._final_validation()
