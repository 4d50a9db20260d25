"""A packaged bundle's models/model.pt loads into its own network_def, the way the model zoo's
ckpt_export loads it (ignite ``Checkpoint.load_objects``: the whole file, strict), whatever the
pretrained backbone family: the record in the file decides the architecture."""

from __future__ import annotations

import pytest
import torch
from ignite.handlers import Checkpoint

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.checkpoint import atomic_save
from monai_ssl_plugin.sharing import package_bundle
from monai_ssl_plugin.sharing.zoo import MODEL_FILE, network_def

from sharing_helpers import _record


@pytest.mark.parametrize("backbone", ["nnunet_plain_tiny", "monai_resnet10"])
def test_packaged_model_loads_strictly_into_its_network_def(backbone, tmp_path):
    torch.manual_seed(0)
    adapter = create_backbone(backbone, in_channels=1)
    record = {**_record(), "backbone_family": adapter.family, "backbone_kwargs": adapter.constructor}
    atomic_save({"network": adapter.network.state_dict(), "record": record}, tmp_path / "run" / "checkpoints" / "final.pt")
    zip_path = package_bundle(tmp_path / "run", bundle="mae_ssl_pretraining", name="zoo_check", out=tmp_path / "out")
    folder = zip_path.parent / "zoo_check"

    torch.manual_seed(1)  # other initial weights: the load must replace every one of them
    net = network_def(folder)
    Checkpoint.load_objects(to_load={"": net}, checkpoint=str(folder / MODEL_FILE))
    loaded = net.backbone.network.state_dict()
    expected = adapter.network.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
