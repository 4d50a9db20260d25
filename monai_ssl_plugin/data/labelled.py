"""Labelled cases (image + label map) read the way pretraining reads images.

Images go through :class:`~monai_ssl_plugin.data.sources.NiftiFolderSource` (nnU-Net's reader, arrays
(C, z, y, x), z-scored per case, the ``nnunet`` axis order); label maps through the same reader's
``read_seg``, so they line up voxel for voxel. Used by the pay-off monitor during pretraining and by
the evaluation's labelled cases.

Where the files are (:func:`labelled_folders`): an nnU-Net raw dataset folder (``imagesTr`` +
``labelsTr``), its ``labelsTr`` folder, or any folder of label maps named like the images
(``<case>.nii.gz``) together with the images folder (``<case>_0000.nii.gz`` or ``<case>.nii.gz``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

from monai_ssl_plugin.data.sources import NiftiFolderSource
from monai_ssl_plugin.errors import PluginError

_LAYOUT_FIX = ("Pass an nnU-Net raw dataset folder (imagesTr + labelsTr), its labelsTr folder, or a folder of "
               "label maps together with the images folder.")


def labelled_folders(labels: str | Path, images: str | Path | None = None) -> tuple[Path, Path, str]:
    """``(images folder, labels folder, file ending)`` for ``labels`` (and ``images``, when given)."""
    labels = Path(labels).expanduser()
    if not labels.is_dir():
        raise PluginError(f"Labels folder {labels} does not exist.", _LAYOUT_FIX)
    if (labels / "labelsTr").is_dir():  # a raw dataset folder
        labels = labels / "labelsTr"
    root = labels.parent
    ending = ".nii.gz"
    if (root / "dataset.json").is_file():
        ending = json.loads((root / "dataset.json").read_text()).get("file_ending", ending)
    image_dir = Path(images).expanduser() if images else root / "imagesTr"
    if not image_dir.is_dir():
        raise PluginError(f"No images folder for the labels in {labels} (looked for {image_dir}).", _LAYOUT_FIX)
    return image_dir, labels, ending


def read_labelled(labels: str | Path, images: str | Path | None = None, case_ids: Sequence[str] | None = None
                  ) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(case id, image (C, z, y, x) float32, label (z, y, x) uint8)`` for every image with a label map
    (or for ``case_ids``, in that order), in case-id order."""
    image_dir, label_dir, ending = labelled_folders(labels, images)
    source = NiftiFolderSource(image_dir)
    index = {c: i for i, c in enumerate(source.case_ids)}
    wanted = list(case_ids) if case_ids is not None else [c for c in source.case_ids
                                                           if (label_dir / f"{c}{ending}").is_file()]
    if not wanted:
        raise PluginError(f"No image in {image_dir} has a label map in {label_dir} (expected <case>{ending}).",
                          _LAYOUT_FIX)
    for case in wanted:
        label_file = label_dir / f"{case}{ending}"
        if case not in index or not label_file.is_file():
            raise PluginError(f"Case {case} has no {'image' if case not in index else 'label file'} "
                              f"({image_dir if case not in index else label_file}).", "Add it or remove the case.")
        image = source.load(index[case])
        seg, _ = SimpleITKIO().read_seg(str(label_file))
        if tuple(seg.shape[1:]) != tuple(image.shape[1:]):
            raise PluginError(f"Case {case}: label shape {seg.shape[1:]} differs from image shape {image.shape[1:]}.",
                              "Write the label on the image's grid.")
        yield case, image, np.asarray(seg[0], dtype=np.uint8)


def labelled_case_ids(labels: str | Path, images: str | Path | None = None) -> list[str]:
    """The case ids that have both an image and a label map, sorted."""
    image_dir, label_dir, ending = labelled_folders(labels, images)
    return [c for c in NiftiFolderSource(image_dir).case_ids if (label_dir / f"{c}{ending}").is_file()]
