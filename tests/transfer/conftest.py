"""The transfer layer's tests use the nnU-Net checkpoint helpers (tests/export) and the tiny MONAI networks
(tests/monai_bundles)."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
for folder in ("export", "monai_bundles"):
    if str(_TESTS / folder) not in sys.path:
        sys.path.insert(0, str(_TESTS / folder))
