"""Fixtures for the MONAI downstream tests: tiny real MONAI networks and SSL checkpoints with records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
for folder in ("pretrained", "export"):  # published-layout files (OpenMind) and the nnU-Net helpers they use
    if str(Path(__file__).resolve().parent.parent / folder) not in sys.path:
        sys.path.append(str(Path(__file__).resolve().parent.parent / folder))


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield
