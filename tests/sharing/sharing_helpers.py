"""Shared values of the sharing tests: the bundle name and a checkpoint record."""

from __future__ import annotations

NAME = "mae_test_bundle"


def _record(steps=8):
    return {"backbone_family": "nnunet.PlainConvUNet", "backbone_kwargs": {"n_stages": 2}, "in_channels": 1,
            "spatial_dims": 3, "axis_order": "nnunet", "spacing": [1.0, 1.0, 1.0], "normalization": ["ZScore"],
            "patch_size": [32, 32, 32], "pretext": "mae", "pretext_settings": {"mask_ratio": 0.75, "block_size": 4},
            "key_prefixes": {"encoder": "encoder."}, "pretrained_parts": ["stem", "encoder", "decoder"],
            "steps": steps, "versions": {"torch": "2.14.1", "monai": "1.6.1", "monai_ssl_plugin": "0.1.0"},
            "data": {"kind": "nnunet_raw", "description": "6 synthetic MRI volumes"}}
