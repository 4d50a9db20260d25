"""Make nnU-Net find the plugin's trainers: the ``nnUNet_extTrainer`` folder and the shell line setting it.

nnU-Net (>= 2.8) looks up ``-tr NAME`` in its own package, then in every folder listed in
``nnUNet_extTrainer`` (``os.pathsep``-separated), importing each module there as a top-level name.
The plugin's folder holds one thin module that re-exports the trainer classes.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

ENV_EXT_TRAINER = "nnUNet_extTrainer"


def ext_trainer_dir() -> str:
    """Absolute path of the folder to list in ``nnUNet_extTrainer``."""
    return str(Path(__file__).resolve().parent / "ext_trainers")


def env_line() -> str:
    """``export nnUNet_extTrainer=...`` for a POSIX shell, keeping folders already listed there."""
    folder = ext_trainer_dir()
    current = [p for p in os.environ.get(ENV_EXT_TRAINER, "").split(os.pathsep) if p.strip()]
    value = os.pathsep.join(current if folder in current else current + [folder])
    return f"export {ENV_EXT_TRAINER}={shlex.quote(value)}"
