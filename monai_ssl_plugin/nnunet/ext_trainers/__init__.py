"""Folder listed in ``nnUNet_extTrainer``. nnU-Net imports the modules here as top-level names and
skips this ``__init__`` (it exists so the folder ships in the wheel)."""
