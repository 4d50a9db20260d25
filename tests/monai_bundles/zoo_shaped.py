"""Bundles shaped like the model zoo's, one per consumer family, written here (tiny networks).

Each follows the layout of a real zoo bundle's ``configs/train.json``: ``network_def`` with a short
``_target_``, ``train#deterministic_transforms`` + ``train#random_transforms`` composed in
``train#preprocessing``, the zoo's reading transforms (``LoadImaged``, ``EnsureChannelFirstd``,
``Orientationd`` RAS, ``Spacingd``, a ``ScaleIntensityRanged`` CT window or ``NormalizeIntensityd``),
``train#handlers`` / ``train#trainer`` (or the templates' top-level ``handlers`` / ``trainer``):

- ``retinanet``: lung_nodule_ct_detection (``backbone`` expression, ``resnet_fpn_feature_extractor``,
  window -1024..300, ``scripts/trainer.py``);
- ``swinunetr``: swin_unetr_btcv_segmentation (Spacingd 1.5 x 1.5 x 2.0, window -175..250);
- ``unet``: spleen_ct_segmentation (UNet, batch norm, 2 residual units, window -57..164);
- ``segresnet``: brats_mri_segmentation's network and ``NormalizeIntensityd(nonzero, channel_wise)``;
- ``densenet`` / ``resnet``: a classification bundle (DenseNet121 / ResNet, ``ResizeWithPadOrCropd``);
- ``template``: segmentation_template (top-level ``trainer`` and ``handlers``, UNet, ``ScaleIntensityd``).
"""

from __future__ import annotations

import copy
from pathlib import Path

from monai_ssl_helpers import (ZOO_DETECTION_TRAINER, write_bundle, zoo_classification_config, zoo_detection_config,
                               zoo_segmentation_config)

FAMILIES = ("retinanet", "swinunetr", "unet", "segresnet", "densenet", "resnet", "template")
# family -> (target sub-module the overlay must choose, prefix of the SSL weights in the consumer, SSL family)
TARGETS = {"retinanet": "feature_extractor.body", "swinunetr": "swinViT", "unet": "auto", "segresnet": "auto",
           "densenet": "features", "resnet": "auto", "template": "auto"}


def _reading(keys: list[str], intensity: dict, pixdim: list[float] | None = None) -> list[dict]:
    """The zoo's deterministic reading transforms for ``keys`` (image first), then a fixed 32^3 size."""
    modes = ["bilinear", "nearest"][: len(keys)]
    out = [{"_target_": "LoadImaged", "keys": keys, "image_only": True},
           {"_target_": "EnsureChannelFirstd", "keys": keys},
           {"_target_": "Orientationd", "keys": keys, "axcodes": "RAS"}]
    if pixdim:
        out.append({"_target_": "Spacingd", "keys": keys, "pixdim": pixdim, "mode": modes})
    out.append({"_target_": intensity.pop("_target_"), "keys": "image", **intensity})
    out.append({"_target_": "ResizeWithPadOrCropd", "keys": keys, "spatial_size": [32, 32, 32]})
    return out + [{"_target_": "EnsureTyped", "keys": keys}]


def _window(a_min: float, a_max: float) -> dict:
    return {"_target_": "ScaleIntensityRanged", "a_min": a_min, "a_max": a_max, "b_min": 0.0, "b_max": 1.0, "clip": True}


def _segmentation(data: str, network_def: dict, intensity: dict, pixdim: list[float] | None) -> dict:
    config = zoo_segmentation_config(data, network_def)
    config["train"]["deterministic_transforms"] = _reading(["image", "label"], intensity, pixdim)
    config["train"]["random_transforms"] = [{"_target_": "RandFlipd", "keys": ["image", "label"], "prob": 0.5,
                                             "spatial_axis": 0}]
    config["train"]["preprocessing"] = {"_target_": "Compose",
                                        "transforms": "$@train#deterministic_transforms + @train#random_transforms"}
    return config


def _detection(data: str) -> dict:
    config = zoo_detection_config(data)
    config["backbone"] = ("$monai.networks.nets.resnet.ResNet(block='basic',layers=[1,1,1,1],block_inplanes=[8,16,32,64],"
                          "spatial_dims=3,n_input_channels=1,conv1_t_stride=[2,2,1],conv1_t_size=[7,7,7])")
    pre = config["train"]["preprocessing_transforms"]
    at = next(i for i, t in enumerate(pre) if t["_target_"] == "NormalizeIntensityd")
    pre[at:at + 1] = [{"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                      {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1024.0, "a_max": 300.0,
                       "b_min": 0.0, "b_max": 1.0, "clip": True}]
    return config


def _classification(data: str, network_def: dict | None) -> dict:
    config = zoo_classification_config(data, network_def)
    config["train"]["deterministic_transforms"] = _reading(["image"], _window(-57, 164)) + [
        {"_target_": "EnsureTyped", "keys": "label"}]
    return config


def _template(data: str) -> dict:
    """segmentation_template's train.yaml layout: everything at the top level."""
    seg = _segmentation(data, _UNET, {"_target_": "ScaleIntensityd"}, None)
    train = seg.pop("train")
    config = {k: v for k, v in seg.items() if k != "run"}
    config.update({"base_transforms": train["deterministic_transforms"], "train_transforms": train["random_transforms"],
                   "preprocessing": {"_target_": "Compose", "transforms": "$@base_transforms + @train_transforms"},
                   "train_dataset": {"_target_": "Dataset", "data": "$@datalist[:2]", "transform": "@preprocessing"},
                   "train_dataloader": {"_target_": "DataLoader", "dataset": "@train_dataset", "batch_size": 2,
                                        "num_workers": 0},
                   "handlers": train["handlers"], "inferer": train["inferer"]})
    config["trainer"] = {**train["trainer"], "train_data_loader": "@train_dataloader", "inferer": "@inferer",
                         "train_handlers": "@handlers"}
    config["run"] = ["$@trainer.run()"]
    return config


_UNET = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32, 64],
         "strides": [2, 2, 2], "num_res_units": 2, "norm": "batch"}
_NETWORKS = {
    "swinunetr": {"_target_": "SwinUNETR", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "feature_size": 12,
                  "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "norm_name": "batch"},
    "unet": _UNET,
    "segresnet": {"_target_": "SegResNet", "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "init_filters": 8,
                  "in_channels": 1, "out_channels": 2, "dropout_prob": 0.2},
    "resnet": {"_target_": "ResNet", "block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64],
               "spatial_dims": 3, "n_input_channels": 1, "num_classes": 2},
}


def zoo_config(family: str, data: str) -> dict:
    """The train config of a zoo-shaped bundle of ``family`` reading the lesion dataset at ``data``."""
    if family == "retinanet":
        return _detection(data)
    if family in ("densenet", "resnet"):
        return _classification(data, copy.deepcopy(_NETWORKS.get(family)))
    if family == "template":
        return _template(data)
    intensity = ({"_target_": "NormalizeIntensityd", "nonzero": True, "channel_wise": True} if family == "segresnet"
                 else _window(-175, 250) if family == "swinunetr" else _window(-57, 164))
    pixdim = None if family == "segresnet" else [1.5, 1.5, 2.0]
    return _segmentation(data, copy.deepcopy(_NETWORKS[family]), intensity, pixdim)


def write_zoo_bundle(root: Path, family: str, data: str) -> Path:
    """A bundle folder (configs/train.json|yaml, metadata, logging; scripts/ for detection)."""
    scripts = {"scripts/__init__.py": "", "scripts/trainer.py": ZOO_DETECTION_TRAINER} if family == "retinanet" else None
    if family == "template":
        import yaml

        bundle = write_bundle(root, {}, scripts=scripts)
        (bundle / "configs" / "train.json").unlink()
        (bundle / "configs" / "train.yaml").write_text(yaml.safe_dump(zoo_config(family, data), sort_keys=False))
        return bundle
    return write_bundle(root, zoo_config(family, data), scripts=scripts)
