"""``pretrain()``, the one-call entry point, and the names the pretraining bundles call from their configs.

Bundles hold no code: their YAML names small helpers by ``_target_`` / ``$`` expressions
(``$import monai_ssl_plugin.engine.run as ssl_run``, then ``ssl_run.as_bool``,
``_target_: monai_ssl_plugin.engine.run.build_backbone`` ...). The helpers live in named modules
(:mod:`.config_values`: flags, required ids, the device; :mod:`.network`: the backbone, the patch,
the MAE block, the record; :mod:`.schedules`: the warm-up; :mod:`.encoder`: the encoder for
inference; :mod:`monai_ssl_plugin.bundles`: where a bundle is) and are re-exported here, so the
bundles' configs keep one import. This module itself checks the overrides and runs a bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle import run as bundle_run

from monai_ssl_plugin.bundles import bundle_dir, train_configs
from monai_ssl_plugin.engine.config_values import as_bool, auto_device, open_dataset, required
from monai_ssl_plugin.engine.encoder import LatentEncoder, encode_cases, encoder_network, load_encoder_weights
from monai_ssl_plugin.engine.handlers.checkpoint import resume_mode
from monai_ssl_plugin.engine.network import (DEFAULT_BACKBONE, build_backbone, check_patch_size, mae_block_size,
                                             record_factory)
from monai_ssl_plugin.engine.schedules import warmup_iterations
from monai_ssl_plugin.engine.settings import check_overrides, clean_failed_start
from monai_ssl_plugin.errors import PluginError

logger = logging.getLogger(__name__)

# names the bundles' YAML reaches through this module
__all__ = ["DEFAULT_BACKBONE", "LatentEncoder", "as_bool", "auto_device", "build_backbone", "bundle_dir",
           "check_override_ids", "check_patch_size", "encode_cases", "encoder_network", "load_encoder_weights",
           "mae_block_size", "open_dataset", "pretrain", "record_factory", "required", "warmup_iterations"]


def _plugin_error_in(error: BaseException) -> PluginError | None:
    """The PluginError a config error was raised from (MONAI wraps errors in RuntimeError), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, PluginError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# -- running a bundle ----------------------------------------------------------------------------
def check_override_ids(config_files: str | Path | Sequence[str | Path], ids: dict[str, Any]) -> None:
    """Refuse overrides of ids the config does not define: a misspelt id would otherwise be added
    as a new, unused entry and the run would silently use the default."""
    files = [config_files] if isinstance(config_files, (str, Path)) else list(config_files)
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    unknown = sorted(k for k in ids if k not in parser)
    if unknown:
        raise PluginError(f"{Path(files[-1]).name} has no config id {', '.join(repr(k) for k in unknown)}.",
                          "Check the spelling; nested ids use '#', e.g. train#epoch_length or train#trainer#max_epochs.")


# -- entry point --------------------------------------------------------------------------------
def pretrain(bundle: str | Path = "mae_ssl_pretraining", dataset_dir: str | Path | None = None,
             output_dir: str | Path | None = None, resume: bool = False, **overrides: Any) -> Path:
    """Run a pretraining bundle in this process and return its final checkpoint.

    Args:
        bundle: the name of a shipped bundle (``monai-ssl list``) or a bundle folder.
        dataset_dir: unlabelled data (NIfTI folder, nnU-Net raw or preprocessed dataset).
        output_dir: run folder (checkpoints/, timing.csv, tensorboard/).
        resume: continue from ``output_dir/checkpoints/latest.pt`` (``"last_good"``: from the newest intact
            checkpoint when ``latest.pt`` is damaged).
        overrides: config ids and values, e.g. ``{"train#trainer#max_epochs": 2, "backbone": "nnunet_plain_tiny"}``
            (``::`` works as a separator too).

    Returns ``output_dir/checkpoints/final.pt``.
    """
    if dataset_dir is None or output_dir is None:
        raise PluginError("pretrain needs a dataset_dir and an output_dir.",
                          "Call pretrain(bundle, dataset_dir=..., output_dir=...) or pass --dataset_dir and --output_dir.")
    if not Path(dataset_dir).exists():
        raise PluginError(f"Dataset folder {dataset_dir} does not exist.", "Check the --dataset_dir path.")
    root = bundle_dir(bundle)
    configs = root / "configs"
    config_files = train_configs(root)
    ids = {k.replace("::", "#"): v for k, v in overrides.items()}
    check_override_ids(config_files, ids)
    check_overrides({**ids, "resume": resume})  # types and ranges, before anything is created
    output_dir = Path(output_dir).expanduser().resolve()
    try:
        bundle_run(config_file=config_files, meta_file=str(configs / "metadata.json"),
                   logging_file=str(configs / "logging.conf"), bundle_root=str(root),
                   dataset_dir=str(Path(dataset_dir).expanduser().resolve()), output_dir=str(output_dir),
                   resume=resume_mode(resume), **ids)
    except Exception as e:  # MONAI wraps config errors; surface the plugin's one-line message
        clean_failed_start()
        plugin_error = _plugin_error_in(e)
        if plugin_error is None:
            raise
        raise plugin_error from None
    final = output_dir / "checkpoints" / "final.pt"
    if not final.is_file():
        raise PluginError(f"The run finished without writing {final}.", "Check the log above for the step that failed.")
    return final
