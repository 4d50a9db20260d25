import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.losses import MaskedReconstructionLoss
from monai_ssl_plugin.pretext import create_pretext, list_pretexts


def test_masked_loss_ignores_visible_voxels():
    target = torch.zeros(1, 1, 4, 4)
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., :2, :] = 1
    pred = torch.zeros(1, 1, 4, 4)
    pred[..., :2, :] = 100.0  # wrong only where visible
    assert MaskedReconstructionLoss()(pred, target, keep) == 0
    pred[..., 2:, :] = 2.0
    assert MaskedReconstructionLoss()(pred, target, keep) == 4.0
    assert MaskedReconstructionLoss("l1")(pred, target, keep) == 2.0


def test_sparse_masking_hides_masked_regions_from_encoder():
    torch.manual_seed(0)
    mae = create_pretext("mae", backbone=create_backbone("nnunet_plain_tiny"), block_size=8, mask_ratio=0.5)
    seen = []
    mae.backbone.encoder_stages()[-1].register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    out = mae({"image": torch.randn(2, 1, 32, 32, 32)})
    keep = mae.last_outputs["keep_mask"]
    deep_keep = torch.nn.functional.interpolate(keep, size=seen[0].shape[2:], mode="nearest")
    assert (seen[0] * (1 - deep_keep)).abs().max() == 0  # nothing flows from masked blocks
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    # outside a pretext step the hooks are inert
    x = torch.randn(1, 1, 32, 32, 32)
    assert not (mae.backbone.encode(x)[-1] == 0).all()
    assert list_pretexts()["mae"] == "generative"
