"""An nnssl Primus checkpoint fine-tuned with the real ``nnUNetv2_train -tr nnUNetTrainerSSL_short`` (tiny, CPU).

raw dataset -> nnUNetv2_plan_and_preprocess -> ``write_plans_variant(checkpoint=<nnssl Primus file>)`` (Primus at
its pretraining patch) -> nnUNetv2_train, 1 epoch x 2 iterations, the file given by ``nnUNet_SSL_pretrained``;
its final validation predicts the validation cases through the trainer's network builder.
"""

from __future__ import annotations

import json

import pytest
import torch

from nnunet_e2e import CONFIGURATION, SHORT
from nnunet_helpers import write_nnssl_primus

pytestmark = pytest.mark.e2e


def test_nnssl_primus_checkpoint_fine_tunes_with_nnunetv2_train(e2e, tmp_path):
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset
    from monai_ssl_plugin.nnunet.plans import write_plans_variant

    raw = make_synthetic_dataset(e2e.raw, 953, "Primus", n_labelled=5, n_unlabelled=0, shape=(32, 32, 32), seed=5)
    e2e.run("nnUNetv2_plan_and_preprocess", "-d", 953, "-c", CONFIGURATION, "-np", 1, "-npfp", 1, plan=True)
    checkpoint, published = write_nnssl_primus(tmp_path / "checkpoint_final.pth")
    with e2e.active():
        plans_file = write_plans_variant(953, checkpoint=checkpoint, plans_identifier="nnUNetPlans_primus", log=None)
    assert json.loads(plans_file.read_text())["configurations"][CONFIGURATION]["patch_size"] == [32, 32, 32]
    out = e2e.run("nnUNetv2_train", 953, CONFIGURATION, 0, "-tr", SHORT, "-p", plans_file.stem, "-device", "cpu",
                  nnUNet_SSL_pretrained=str(checkpoint), nnUNet_SSL_epochs="1", nnUNet_SSL_iterations="2")
    n = sum(k.startswith(("down_projection.", "eva.")) for k in published)
    assert "[monai-ssl] loading pretrained stem + encoder from" in out
    assert f"pretrained stem + encoder: {n} tensors loaded (0 adapted), 0 missing, 0 unexpected" in out
    fold = e2e.results / raw.name / f"{SHORT}__{plans_file.stem}__{CONFIGURATION}" / "fold_0"
    trained = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    assert set(trained) == set(published)  # nnU-Net saved the Primus it trained: nnssl's key names
    assert (fold / "validation" / "summary.json").is_file()  # prediction through the trainer's builder
