"""Unlabelled data: sources (NIfTI folders, nnU-Net raw / preprocessed), random patches, demo data.

Heavy imports (nnU-Net, nilearn) happen inside the functions that need them.
"""

from monai_ssl_plugin.data.dataset import RandomPatchDataset, make_patch_loader, pad_to, seed_worker
from monai_ssl_plugin.data.demo_cohort import make_demo_dataset
from monai_ssl_plugin.data.nnunet_raw import RawDatasetWriter, dataset_folder_name, write_raw_dataset
from monai_ssl_plugin.data.sources import (
    ArraySource,
    NiftiFolderSource,
    NnUNetPreprocessedSource,
    NnUNetRawSource,
    UnlabelledSource,
    open_source,
)
from monai_ssl_plugin.data.guard import check_data, check_source
from monai_ssl_plugin.data.synthetic import make_synthetic_dataset, make_synthetic_volumes

__all__ = [
    "ArraySource", "NiftiFolderSource", "NnUNetPreprocessedSource", "NnUNetRawSource", "RandomPatchDataset",
    "RawDatasetWriter", "UnlabelledSource", "check_data", "check_source", "dataset_folder_name", "make_demo_dataset",
    "make_patch_loader", "make_synthetic_dataset", "make_synthetic_volumes", "open_source", "pad_to",
    "seed_worker", "write_raw_dataset",
]
