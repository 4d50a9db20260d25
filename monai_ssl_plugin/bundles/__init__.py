"""The MONAI bundles, shipped inside the package, and where to find them.

Every folder here with a ``configs/metadata.json`` is a bundle in the model zoo's layout. They are
package data, so ``monai-ssl pretrain``, ``list`` and ``copy-bundle`` work the same from a wheel as from
a source checkout. A pretraining bundle's config is a list MONAI merges in order:
``configs/base.yaml`` (what all pretraining bundles share, ``_shared/base.yaml``), then
``configs/train.yaml`` (the method), then, under torchrun, ``configs/multi_gpu_train.yaml``
(``_shared/multi_gpu_train.yaml``). In the source tree the shared files are symlinks to ``_shared/``;
the wheel and every copy hold plain files, so a copied bundle is self-contained.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from monai_ssl_plugin.errors import PluginError

BUNDLES_DIR = Path(__file__).resolve().parent
BASE_CONFIG = "base.yaml"
TRAIN_CONFIG = "train.yaml"
MULTI_GPU_CONFIG = "multi_gpu_train.yaml"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def list_bundles() -> list[str]:
    """Names of the bundles shipped with the package, sorted."""
    return sorted(p.parents[1].name for p in BUNDLES_DIR.glob("*/configs/metadata.json"))


def bundle_dir(bundle: str | os.PathLike) -> Path:
    """The folder of a bundle: a path to one (e.g. a copy), or the name of a shipped one."""
    candidate = Path(bundle).expanduser()
    if not (candidate / "configs").is_dir():
        candidate = BUNDLES_DIR / str(bundle)
    if not (candidate / "configs" / TRAIN_CONFIG).is_file():
        raise PluginError(f"No bundle {str(bundle)!r} (looked for configs/{TRAIN_CONFIG} there and among the "
                          "shipped bundles).", f"Pass a bundle folder or one of: {', '.join(list_bundles())}.")
    return candidate.resolve()


def train_configs(bundle: str | os.PathLike, multi_gpu: bool = False) -> list[str]:
    """The config files MONAI merges to train ``bundle``, in order (``--config_file "[...]"``).

    ``base.yaml`` comes first when the bundle has one (the pretraining bundles); the fine-tuning
    bundles are a single ``train.yaml``. ``multi_gpu`` appends the DDP overlay.
    """
    configs = bundle_dir(bundle) / "configs"
    names = [BASE_CONFIG] if (configs / BASE_CONFIG).is_file() else []
    names.append(TRAIN_CONFIG)
    if multi_gpu:
        if not (configs / MULTI_GPU_CONFIG).is_file():
            raise PluginError(f"{configs.parent.name} has no configs/{MULTI_GPU_CONFIG}.",
                              "Run it in one process, or use a pretraining bundle.")
        names.append(MULTI_GPU_CONFIG)
    return [str(configs / name) for name in names]


def copy_bundle(bundle: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a bundle to ``dest/<name>`` as plain files (shared configs included) and return that folder.

    The copy is staged next to its target and renamed into place, so a failed copy leaves nothing
    behind; an existing ``dest/<name>`` is refused, never overwritten.
    """
    src = bundle_dir(bundle)
    dest = Path(dest).expanduser().resolve()
    target = dest / src.name
    if target.exists():
        raise PluginError(f"{target} already exists.", "Remove it or copy to another folder.")
    dest.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{src.name}.", suffix=".copying", dir=dest))
    try:
        shutil.copytree(src, stage / src.name, symlinks=False, ignore=_IGNORED)
        (stage / src.name / "models").mkdir(exist_ok=True)  # the zoo layout has it; a wheel drops empty folders
        os.replace(stage / src.name, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target
