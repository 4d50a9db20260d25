"""Tiny MONAI downstream networks and SSL checkpoints (with a record) for tests/monai_bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.checkpoint import atomic_save

WIDTHS = [8, 16, 32, 64]


def record(family: str, **kw: Any) -> dict[str, Any]:
    d = dict(backbone_family=family, backbone_kwargs={}, in_channels=1, spatial_dims=3, axis_order="monai",
             spacing=[1.5, 1.5, 1.5], normalization=["ZScoreNormalization"], patch_size=[32, 32, 32], pretext="test",
             pretext_settings={}, key_prefixes={}, pretrained_parts=["stem", "encoder"], steps=3)
    d.update(kw)
    return d


def save_checkpoint(path: Path, network: nn.Module, family: str, **kw: Any) -> Path:
    """A pretraining checkpoint as the engine writes it: {"network": state_dict, "record": {...}}."""
    return atomic_save({"network": network.state_dict(), "record": record(family, **kw), "engine": {"iteration": 3}},
                       path)


def resnet(num_classes: int = 2, in_channels: int = 1, conv1_t_size: Any = 7, conv1_t_stride: Any = 2,
           seed: int | None = None) -> nn.Module:
    from monai.networks.nets import ResNet

    if seed is not None:
        torch.manual_seed(seed)
    return ResNet("basic", [1, 1, 1, 1], WIDTHS, spatial_dims=3, n_input_channels=in_channels,
                  conv1_t_size=conv1_t_size, conv1_t_stride=conv1_t_stride, num_classes=num_classes)


def retinanet(seed: int | None = None, in_channels: int = 1) -> nn.Module:
    """RetinaNet + resnet_fpn_feature_extractor as in the model zoo's lung_nodule_ct_detection (tiny widths)."""
    from monai.apps.detection.networks.retinanet_network import RetinaNet, resnet_fpn_feature_extractor

    backbone = resnet(in_channels=in_channels, conv1_t_size=[7, 7, 7], conv1_t_stride=[2, 2, 1], seed=seed)
    fe = resnet_fpn_feature_extractor(backbone, 3, False, [1, 2], None)
    return RetinaNet(spatial_dims=3, num_classes=1, num_anchors=3, feature_extractor=fe, size_divisible=[16, 16, 8])


def detector(network: nn.Module):
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=[1, 2, 4],
                                             base_anchor_shapes=[[6, 8, 4], [8, 6, 5], [10, 10, 6]])
    det = RetinaNetDetector(network, anchors, debug=False)
    det.set_atss_matcher(num_candidates=4, center_in_gt=False)
    det.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
    det.set_target_keys(box_key="box", label_key="label")
    return det


def densenet(out_channels: int = 2, seed: int | None = None) -> nn.Module:
    from monai.networks.nets import DenseNet121

    if seed is not None:
        torch.manual_seed(seed)
    return DenseNet121(spatial_dims=3, in_channels=1, out_channels=out_channels)


def swinunetr(out_channels: int = 2, seed: int | None = None, in_channels: int = 1) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    if seed is not None:
        torch.manual_seed(seed)
    # batch norm: instance norm cannot train on the 1-voxel bottleneck of a 32^3 input
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=12, depths=(1, 1, 1, 1),
                     num_heads=(1, 1, 1, 1), norm_name="batch")


def vit(seed: int | None = None, img_size=(32, 32, 32)) -> nn.Module:
    from monai.networks.nets import ViT

    if seed is not None:
        torch.manual_seed(seed)
    return ViT(in_channels=1, img_size=img_size, patch_size=16, hidden_size=48, mlp_dim=96, num_heads=4, num_layers=12)


def unetr(out_channels: int = 2, seed: int | None = None, img_size=(32, 32, 32)) -> nn.Module:
    from monai.networks.nets import UNETR

    if seed is not None:
        torch.manual_seed(seed)
    return UNETR(in_channels=1, out_channels=out_channels, img_size=img_size, feature_size=8, hidden_size=48,
                 mlp_dim=96, num_heads=4)


def equal_under(a: nn.Module, b_state: dict[str, torch.Tensor], prefix_a: str, prefix_b: str = "") -> int:
    """Assert every tensor of ``a`` under ``prefix_a`` equals ``b_state[prefix_b + rest]``; returns the count."""
    n = 0
    for k, v in a.state_dict().items():
        if k.startswith(prefix_a):
            other = b_state[prefix_b + k[len(prefix_a):]]
            assert torch.equal(v, other), k
            n += 1
    assert n > 0
    return n


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
