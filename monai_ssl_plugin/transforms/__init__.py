"""Batched transforms for the pretexts, one module per family; every function takes a batch
``(B, C, *spatial)`` and a ``generator`` and draws its random parameters for the whole batch.

- :mod:`.masking`: the one block-masking routine (MAE / SparK, Rubik's cube masks);
- :mod:`.models_genesis`: flip, local pixel shuffle, Bezier intensity, in-/out-painting, the pipeline;
- :mod:`.coarse`: MONAI's coarse dropout / shuffle and the ViTAutoEnc tutorial's views;
- :mod:`.swin_unetr`: Swin UNETR's rotation + cut-out views;
- :mod:`.views`: crops, rotations and grids for contrastive, self-distillation and predictive pretexts;
- :mod:`.foreground`: the pathology-preserving guard (a corruption destroys at most a share of a
  lesion or organ mask), on batches and on data dicts;
- underneath: :mod:`._common` (the shared opening: batch check, generator, which samples),
  :mod:`._random` (seeded draws), :mod:`._boxes` (box primitives of the tensor form),
  :mod:`._cpu_kernels` (compiled CPU loops) and :mod:`._ops` (which of the two runs an operation).

The corruptions are importable from the package itself (``transforms.coarse_dropout``).
"""

from .coarse import coarse_dropout, coarse_shuffle, monai_ssl_view, monai_ssl_views
from .models_genesis import (apply_bezier, bezier_intensity, bezier_lut, in_painting, local_pixel_shuffle,
                             models_genesis, out_painting, random_flip, shuffle_boxes)
from .swin_unetr import SwinUNETRViews, paste_from_partners_, swin_unetr_augment, swin_unetr_cutout

__all__ = [
    "random_flip", "local_pixel_shuffle", "shuffle_boxes", "bezier_lut", "apply_bezier", "bezier_intensity",
    "in_painting", "out_painting", "models_genesis", "coarse_dropout", "coarse_shuffle", "monai_ssl_view",
    "monai_ssl_views", "paste_from_partners_", "swin_unetr_cutout", "swin_unetr_augment", "SwinUNETRViews",
]
