"""Run a pretraining bundle the way its README tells a user to: ``python -m monai.bundle run``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from monai_ssl_plugin.bundles import train_configs


def monai_bundle_run(configs: Path, overrides: dict[str, Any], cwd: Path,
                     timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` on the bundle of ``configs`` (its merged train configs, metadata and
    logging config) with each override as a ``--key value`` flag, one OpenMP thread, from ``cwd``."""
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(train_configs(configs.parent)),
            "--meta_file", str(configs / "metadata.json"), "--logging_file", str(configs / "logging.conf")]
    for key, value in overrides.items():
        args += [f"--{key}", str(value).replace(" ", "")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
