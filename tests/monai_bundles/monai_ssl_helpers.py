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


# ---------------------------------------------------------------------------------------------
# Bundles written the way the model zoo writes them (json, short _target_ names, network_def,
# train#trainer, train#handlers, optimizer params from an expression), tiny sizes.
# ---------------------------------------------------------------------------------------------
ZOO_METADATA = {"schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json",
                "version": "0.1.0", "changelog": {"0.1.0": "test bundle"}, "monai_version": "1.6.1",
                "pytorch_version": "2.14.1", "numpy_version": "2.4.6", "required_packages_version": {},
                "task": "test", "description": "test", "authors": "test", "copyright": "test",
                "network_data_format": {"inputs": {}, "outputs": {}}}
LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""
ZOO_DETECTION_TRAINER = '''"""What a zoo detection bundle keeps in scripts/trainer.py (here: the plugin's equivalent)."""
from monai_ssl_plugin.monai_bundles.detection import DetectionTrainer, detection_prepare_batch  # noqa: F401
'''


def _image_transforms(keys="image"):
    return [{"_target_": "LoadImaged", "keys": keys, "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": keys},
            {"_target_": "NormalizeIntensityd", "keys": "image", "channel_wise": True}]


def zoo_detection_config(dataset_dir: str) -> dict:
    """lung_nodule_ct_detection's train.json layout, tiny: resnet backbone expression, feature_extractor
    expression with resnet_fpn_feature_extractor, RetinaNet network_def, RetinaNetDetector, scripts trainer."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "ckpt_dir": "$@bundle_root + '/models'",
        "output_dir": "$@bundle_root + '/eval'",
        "data_file_base_dir": dataset_dir,
        "data_list_file_path": "$@data_file_base_dir + '/datalist_detection.json'",
        "train_datalist": "$monai.data.load_decathlon_datalist(@data_list_file_path, is_segmentation=True, "
                          "data_list_key='training', base_dir=@data_file_base_dir)",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "epochs": 1, "learning_rate": 0.01, "amp": False, "batch_size": 2,
        "anchor_generator": {"_target_": "monai.apps.detection.utils.anchor_utils.AnchorGeneratorWithAnchorShape",
                             "feature_map_scales": [1, 2, 4],
                             "base_anchor_shapes": [[6, 8, 4], [8, 6, 5], [10, 10, 6]]},
        "backbone": "$monai.networks.nets.resnet.ResNet(block='basic', layers=[1,1,1,1], block_inplanes=[8,16,32,64], "
                    "spatial_dims=3, n_input_channels=1, conv1_t_stride=[2,2,1], conv1_t_size=[7,7,7])",
        "feature_extractor": "$monai.apps.detection.networks.retinanet_network.resnet_fpn_feature_extractor(@backbone,3,False,[1,2],None)",
        "network_def": {"_target_": "RetinaNet", "spatial_dims": 3, "num_classes": 1, "num_anchors": 3,
                        "feature_extractor": "@feature_extractor", "size_divisible": [16, 16, 8]},
        "network": "$@network_def.to(@device)",
        "detector": {"_target_": "RetinaNetDetector", "network": "@network", "anchor_generator": "@anchor_generator",
                     "debug": False},
        "detector_ops": [
            "$@detector.set_atss_matcher(num_candidates=4, center_in_gt=False)",
            "$@detector.set_hard_negative_sampler(batch_size_per_image=64,positive_fraction=0.3,pool_size=20,min_neg=16)",
            "$@detector.set_target_keys(box_key='box', label_key='label')",
            "$@detector.set_box_selector_parameters(score_thresh=0.02,topk_candidates_per_level=1000,nms_thresh=0.22,detections_per_img=300)"],
        "optimizer": {"_target_": "torch.optim.SGD", "params": "$@detector.network.parameters()", "lr": "@learning_rate",
                      "momentum": 0.9, "weight_decay": 3e-05, "nesterov": True},
        "lr_scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "optimizer": "@optimizer", "step_size": 150,
                         "gamma": 0.1},
        "train": {
            "preprocessing_transforms": [
                {"_target_": "LoadImaged", "keys": "image", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "EnsureTyped", "keys": ["image", "box"]},
                {"_target_": "EnsureTyped", "keys": "label", "dtype": "$torch.long"},
                {"_target_": "NormalizeIntensityd", "keys": "image"},
                {"_target_": "ConvertBoxToStandardModed", "box_keys": "box", "mode": "cccwhd"}],
            "random_transforms": [
                {"_target_": "RandFlipBoxd", "image_keys": "image", "box_keys": "box", "box_ref_image_keys": "image",
                 "prob": 0.5, "spatial_axis": 0}],
            "final_transforms": [{"_target_": "EnsureTyped", "keys": ["image", "box"]},
                                 {"_target_": "EnsureTyped", "keys": "label", "dtype": "$torch.long"}],
            "preprocessing": {"_target_": "Compose", "transforms": "$@train#preprocessing_transforms + "
                                                                   "@train#random_transforms + @train#final_transforms"},
            "dataset": {"_target_": "Dataset", "data": "$@train_datalist[:2]", "transform": "@train#preprocessing"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 1, "shuffle": True,
                           "num_workers": 0, "collate_fn": "$monai.data.utils.no_collation"},
            "handlers": [
                {"_target_": "LrScheduleHandler", "lr_scheduler": "@lr_scheduler", "print_lr": True},
                {"_target_": "StatsHandler", "tag_name": "train_loss",
                 "output_transform": "$lambda x: monai.handlers.from_engine(['loss'], first=True)(x)[0]"}],
            "trainer": {"_target_": "scripts.trainer.DetectionTrainer", "_requires_": "@detector_ops",
                        "max_epochs": "@epochs", "device": "@device", "train_data_loader": "@train#dataloader",
                        "detector": "@detector", "optimizer": "@optimizer", "train_handlers": "@train#handlers",
                        "amp": "@amp"}},
        "initialize": ["$monai.utils.set_determinism(seed=123)"],
        "run": ["$@train#trainer.run()"],
    }


def zoo_classification_config(dataset_dir: str, network_def: dict | None = None) -> dict:
    """A zoo classification train.json layout (3D DenseNet121 by default), tiny."""
    return {
        "imports": ["$import glob", "$import os", "$import ignite"],
        "bundle_root": ".",
        "ckpt_dir": "$@bundle_root + '/models'",
        "dataset_dir": dataset_dir,
        "data_list_file_path": "$@dataset_dir + '/datalist_classification.json'",
        "train_datalist": "$monai.data.load_decathlon_datalist(@data_list_file_path, data_list_key='training', base_dir=@dataset_dir)",
        "val_datalist": "$monai.data.load_decathlon_datalist(@data_list_file_path, data_list_key='validation', base_dir=@dataset_dir)",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "num_classes": 2,
        "network_def": network_def or {"_target_": "DenseNet121", "spatial_dims": 3, "in_channels": 1,
                                       "out_channels": "@num_classes"},
        "network": "$@network_def.to(@device)",
        "loss": {"_target_": "torch.nn.CrossEntropyLoss"},
        "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.001},
        "train": {
            "deterministic_transforms": [*_image_transforms(),
                                         {"_target_": "ResizeWithPadOrCropd", "keys": "image", "spatial_size": [32, 32, 32]},
                                         {"_target_": "EnsureTyped", "keys": ["image", "label"]}],
            "random_transforms": [{"_target_": "RandFlipd", "keys": "image", "prob": 0.5, "spatial_axis": 0}],
            "preprocessing": {"_target_": "Compose",
                              "transforms": "$@train#deterministic_transforms + @train#random_transforms"},
            "dataset": {"_target_": "Dataset", "data": "$@train_datalist[:4]", "transform": "@train#preprocessing"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 2, "shuffle": True,
                           "num_workers": 0},
            "inferer": {"_target_": "SimpleInferer"},
            "postprocessing": {"_target_": "Compose", "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {"_target_": "AsDiscreted", "keys": ["pred", "label"], "argmax": [True, False], "to_onehot": "@num_classes"}]},
            "handlers": [
                {"_target_": "ValidationHandler", "validator": "@validate#evaluator", "epoch_level": True, "interval": 1},
                {"_target_": "StatsHandler", "tag_name": "train_loss",
                 "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"}],
            "key_metric": {"train_accuracy": {"_target_": "ignite.metrics.Accuracy",
                                              "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}},
            "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 1, "device": "@device",
                        "train_data_loader": "@train#dataloader", "network": "@network", "loss_function": "@loss",
                        "optimizer": "@optimizer", "inferer": "@train#inferer", "postprocessing": "@train#postprocessing",
                        "key_train_metric": "@train#key_metric", "train_handlers": "@train#handlers", "amp": False}},
        "validate": {
            "preprocessing": {"_target_": "Compose", "transforms": "%train#deterministic_transforms"},
            "dataset": {"_target_": "Dataset", "data": "$@val_datalist", "transform": "@validate#preprocessing"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@validate#dataset", "batch_size": 1, "shuffle": False,
                           "num_workers": 0},
            "inferer": "@train#inferer",
            "postprocessing": "%train#postprocessing",
            "handlers": [{"_target_": "StatsHandler", "iteration_log": False},
                         {"_target_": "CheckpointSaver", "save_dir": "@ckpt_dir", "save_dict": {"model": "@network"},
                          "save_key_metric": True, "key_metric_filename": "model.pt"}],
            "key_metric": {"val_accuracy": {"_target_": "ignite.metrics.Accuracy",
                                            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}},
            "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@validate#dataloader",
                          "network": "@network", "inferer": "@validate#inferer", "postprocessing": "@validate#postprocessing",
                          "key_val_metric": "@validate#key_metric", "val_handlers": "@validate#handlers", "amp": False}},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@train#trainer.run()"],
    }


def zoo_segmentation_config(dataset_dir: str, network_def: dict) -> dict:
    """A zoo segmentation train.json layout (spleen_ct_segmentation style), tiny, any network_def."""
    return {
        "imports": ["$import os"],
        "bundle_root": ".",
        "dataset_dir": dataset_dir,
        "datalist": "$monai.data.load_decathlon_datalist(@dataset_dir + '/datalist_segmentation.json', "
                    "data_list_key='training', base_dir=@dataset_dir)",
        "device": "$torch.device('cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
        "optimizer": {"_target_": "torch.optim.AdamW", "params": "$@network.parameters()", "lr": 0.0001},
        "train": {
            "preprocessing": {"_target_": "Compose", "transforms": [*_image_transforms(["image", "label"]),
                                                                     {"_target_": "EnsureTyped", "keys": ["image", "label"]}]},
            "dataset": {"_target_": "Dataset", "data": "$@datalist[:2]", "transform": "@train#preprocessing"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 2, "num_workers": 0},
            "inferer": {"_target_": "SimpleInferer"},
            "handlers": [{"_target_": "StatsHandler", "tag_name": "train_loss",
                          "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"}],
            "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 1, "device": "@device",
                        "train_data_loader": "@train#dataloader", "network": "@network", "loss_function": "@loss",
                        "optimizer": "@optimizer", "inferer": "@train#inferer", "train_handlers": "@train#handlers"}},
        "run": ["$@train#trainer.run()"],
    }


def write_bundle(root: Path, config: dict, name: str = "train.json", scripts: dict[str, str] | None = None) -> Path:
    import json

    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "configs" / name).write_text(json.dumps(config, indent=2))
    (root / "configs" / "metadata.json").write_text(json.dumps(ZOO_METADATA, indent=2))
    (root / "configs" / "logging.conf").write_text(LOGGING_CONF)
    for rel, text in (scripts or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def dynunet_encoder_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """A DynUNet's encoder output per stage (input_block, downsamples, bottleneck), as nnU-Net's encoder returns them."""
    out = []
    for block in [net.input_block, *net.downsamples, net.bottleneck]:
        x = block(x)
        out.append(x)
    return out
