"""What the MONAI model zoo's premerge checks need from a bundle that no pretraining has filled yet.

The zoo's CI (``ci/verify_bundle.py``) wants ``models/model.pt`` in every bundle (downloaded from the
URL in ``large_files.yml`` before the checks) and loads it, strictly, into the bundle's
``network_def`` for the TorchScript export. The shipped bundles are templates: their weights come
from a pretraining run (``monai-ssl package-bundle``) and are published later, so they list
``models/model.pt`` in ``large_files.yml`` with a placeholder URL and no hash. To run the zoo's checks
on a template, :func:`write_initial_weights` writes the *untrained* weights of its ``network_def``
(seeded, so every run writes the same file) in the layout the bundle's own configs load.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from monai_ssl_plugin.checkpoint import atomic_save
from monai_ssl_plugin.engine.encoder import LatentEncoder
from monai_ssl_plugin.errors import PluginError

logger = logging.getLogger(__name__)

MODEL_FILE = "models/model.pt"
INFERENCE_CONFIG = "configs/inference.yaml"


def network_def(bundle: str | os.PathLike) -> torch.nn.Module:
    """The ``network_def`` of a bundle folder's ``inference.yaml``, built as MONAI builds it."""
    folder = Path(bundle)
    if not (folder / INFERENCE_CONFIG).is_file():
        raise PluginError(f"{folder} has no {INFERENCE_CONFIG}.", "Pass a bundle folder (monai-ssl copy-bundle NAME DEST).")
    parser = ConfigParser()
    parser.read_config(str(folder / INFERENCE_CONFIG))
    parser.read_meta(str(folder / "configs" / "metadata.json"))
    parser["bundle_root"] = str(folder)
    return parser.get_parsed_content("network_def")


def initial_state(net: torch.nn.Module) -> dict:
    """The state to save for ``net`` in the layout the bundle's configs load.

    A pretraining bundle's encoder (``LatentEncoder``) reads the plugin's ``{"network": downstream
    state dict}`` layout (its inference run loads ``network``); any other network gets its plain
    state dict, the zoo's usual ``model.pt``.
    """
    if isinstance(net, LatentEncoder):
        return {"network": net.backbone.network.state_dict()}
    return net.state_dict()


def write_initial_weights(bundle: str | os.PathLike, seed: int = 0) -> Path | None:
    """Write the untrained weights of ``bundle``'s ``network_def`` to ``models/model.pt``; returns the file.

    A bundle that already has ``models/model.pt`` (shipped or pretrained weights) is left as it is
    and ``None`` is returned: real weights are never replaced by initial ones.
    """
    target = Path(bundle) / MODEL_FILE
    if target.exists():
        logger.info("%s already has %s: kept.", Path(bundle).name, MODEL_FILE)
        return None
    torch.manual_seed(seed)
    state = initial_state(network_def(bundle))
    atomic_save(state, target)
    logger.warning("Wrote %s: the UNTRAINED initial weights of network_def (seed %d), so the model zoo's checks "
                   "can run; real weights come from training (fine-tuning bundles) or monai-ssl package-bundle "
                   "(pretraining bundles).", target, seed)
    return target
