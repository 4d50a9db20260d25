"""The labelled cases of an evaluation: images, label maps and per-case attributes, in memory.

Images are read exactly as pretraining reads a folder of NIfTI files (nnU-Net's reader, so arrays
are (C, z, y, x) = the ``nnunet`` axis order, z-scored per case); label maps with the same reader,
so they line up voxel for voxel. Every volume is zero-padded at the end of each axis to a multiple
of the network's divisor. Task targets:

- ``tissue_segmentation``: 0 background, 1 grey matter, 2 white matter (a lesion, label 3, lies in
  white matter and counts as 2 here);
- ``lesion_segmentation``: 1 where the label is 3 (white-matter lesion), else 0;
- ``atrophy_classification``: the ``atrophy`` attribute of ``attributes.json`` (0/1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from monai_ssl_plugin.data.labelled import read_labelled
from monai_ssl_plugin.data.sources import NiftiFolderSource
from monai_ssl_plugin.errors import PluginError

LESION_LABEL = 3
N_CLASSES = {"tissue_segmentation": 3, "lesion_segmentation": 2, "atrophy_classification": 2}


@dataclass
class LabelledCases:
    case_ids: list[str]
    images: dict[str, torch.Tensor]  # (C, z, y, x) float32, z-scored, padded
    labels: dict[str, torch.Tensor]  # (z, y, x) uint8 raw label map, padded with 0
    attributes: dict[str, dict[str, Any]]

    def segmentation_target(self, task: str, case: str) -> torch.Tensor:
        lab = self.labels[case]
        if task == "tissue_segmentation":
            return torch.where(lab == LESION_LABEL, torch.full_like(lab, 2), lab).long()
        if task == "lesion_segmentation":
            return (lab == LESION_LABEL).long()
        raise PluginError(f"{task} is not a segmentation task.", "Use tissue_segmentation or lesion_segmentation.")

    def class_label(self, task: str, case: str) -> int:
        attrs = self.attributes.get(case)
        if attrs is None or "atrophy" not in attrs:
            raise PluginError(f"Case {case} has no 'atrophy' attribute for {task}.",
                              "Generate the cohort with make_demo_dataset(atrophy_fraction>0), or add attributes.json "
                              "with {case_id: {\"atrophy\": true/false}} to the raw dataset.")
        return int(bool(attrs["atrophy"]))

    def groups(self, key: str | None) -> dict[str, str] | None:
        """case id -> patient key from the attributes (``None``: every case is its own patient)."""
        if key is None:
            return None
        return {c: str(self.attributes.get(c, {}).get(key, c)) for c in self.case_ids}


def _pad_to(x: torch.Tensor, divisor: list[int]) -> torch.Tensor:
    pads: list[int] = []
    for size, d in reversed(list(zip(x.shape[-3:], divisor))):
        pads += [0, (-size) % d]
    return torch.nn.functional.pad(x, pads)


def load_labelled_cases(raw: str | Path, divisor: list[int]) -> LabelledCases:
    """imagesTr + labelsTr (+ attributes.json) of an nnU-Net raw dataset, padded to ``divisor``;
    every image must have its label map."""
    raw = Path(raw)
    if not (raw / "labelsTr").is_dir():
        raise PluginError(f"{raw} has no labelsTr folder.", "Use an nnU-Net raw dataset with labelled training cases.")
    case_ids = list(NiftiFolderSource(raw / "imagesTr").case_ids)
    images, labels = {}, {}
    for case, image, label in read_labelled(raw, case_ids=case_ids):
        images[case] = _pad_to(torch.from_numpy(image), divisor)
        labels[case] = _pad_to(torch.from_numpy(label), divisor)
    attrs_file = raw / "attributes.json"
    attributes = json.loads(attrs_file.read_text()) if attrs_file.is_file() else {}
    return LabelledCases(case_ids, images, labels, attributes)
