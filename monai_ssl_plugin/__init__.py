"""monai-ssl-plugin: self-supervised pretraining as MONAI Bundles, for nnU-Net and MONAI pipelines."""

__version__ = "0.1.0"
