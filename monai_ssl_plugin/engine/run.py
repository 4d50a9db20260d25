"""What the pretraining bundles call from their configs, and ``pretrain()``, the one-call entry point.

Bundles hold no code: their YAML names these helpers by ``_target_`` / ``$`` expressions. Each helper
does one small thing the config language does badly (pick a device, choose the network from the
data, scale the mask block with the patch, make the checkpoint record) and fails with a one-line
:class:`PluginError` on bad input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_ssl_plugin.bundles import bundle_dir, train_configs  # bundle_dir: also re-exported (ssl_run.bundle_dir)
from monai_ssl_plugin.checkpoint import CheckpointRecord, atomic_save, build_record
from monai_ssl_plugin.errors import PluginError

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "nnunet_plain_small"


# -- command-line values ------------------------------------------------------------------------
def as_bool(value: Any) -> bool:
    """A flag from the command line: fire passes ``--resume true`` as the string ``"true"``."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", "", "none", "null"):
            return False
        raise PluginError(f"Cannot read {value!r} as true/false.", "Pass true or false.")
    return bool(value)


def required(value: Any, name: str) -> Any:
    """``value``, or a one-line error naming the missing ``--name``."""
    if value in (None, "", "null", "None"):
        raise PluginError(f"The bundle needs --{name}.",
                          f"Pass --{name} (for data: a NIfTI folder, an nnU-Net raw or preprocessed dataset).")
    return value


def _plugin_error_in(error: BaseException) -> PluginError | None:
    """The PluginError a config error was raised from (MONAI wraps errors in RuntimeError), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, PluginError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# -- device ---------------------------------------------------------------------------------
def auto_device(device: str | None = None) -> torch.device:
    """``device`` if given (``"cpu"``, ``"cuda:1"``), else the first GPU when there is one, else the CPU."""
    if device not in (None, "", "auto"):
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise PluginError(f"Device {device!r} was requested but CUDA is not available.", "Use --device cpu.")
        return dev
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


# -- network ----------------------------------------------------------------------------------
def build_backbone(backbone: str = "auto", data_info: dict[str, Any] | None = None, plans: str | None = None,
                   configuration: str = "3d_fullres", in_channels: int | None = None):
    """The backbone adapter to pretrain.

    - ``plans`` given: the network of that nnU-Net plans file and ``configuration``;
    - ``backbone="auto"``: the plans of an nnU-Net *preprocessed* ``dataset_dir`` (so the pretrained
      architecture is the one nnU-Net will fine-tune), otherwise ``nnunet_plain_small``;
    - any other name: that registered backbone.

    ``in_channels`` defaults to the data's channel count.
    """
    from monai_ssl_plugin.backbones import NnUNetBackbone, create_backbone

    info = data_info or {}
    channels = int(in_channels or info.get("in_channels") or 1)
    if plans in ("", "null"):
        plans = None
    if plans is None and backbone == "auto" and info.get("plans_file"):
        plans, configuration = info["plans_file"], info.get("configuration", configuration)
    if plans is not None:
        net = NnUNetBackbone.from_plans(plans, configuration, in_channels=channels)
        logger.info("Backbone: %s from %s (%s), %d input channel(s).", net.family, plans, configuration, channels)
        return net
    name = DEFAULT_BACKBONE if backbone == "auto" else backbone
    net = create_backbone(name, in_channels=channels)
    logger.info("Backbone: %s (%s), %d input channel(s).", name, net.family, channels)
    return net


def check_patch_size(patch_size: Sequence[int], backbone: Any) -> list[int]:
    """``patch_size`` as ints, after checking it fits the backbone's dimensions and downsampling."""
    patch = [int(p) for p in patch_size]
    dims = getattr(backbone, "spatial_dims", len(patch))
    if len(patch) != dims:
        raise PluginError(f"patch_size {patch} has {len(patch)} axes but the backbone is {dims}D.",
                          f"Give {dims} sizes, e.g. --patch_size \"{[64] * dims}\".")
    divisor = backbone.divisor()
    bad = [p for p, d in zip(patch, divisor) if p % d or p // d < 2]
    if bad:
        fix = [max(2 * d, round(p / d) * d) for p, d in zip(patch, divisor)]
        raise PluginError(f"patch_size {patch} does not fit the backbone (each axis must be a multiple of {divisor}, "
                          "at least twice it).", f"Use e.g. --patch_size \"{fix}\".")
    return patch


def mae_block_size(patch_size: Sequence[int], reference_block: int = 16, reference_patch: int = 160) -> int:
    """Mask block side scaled with the patch: 16 at 160³ (nnssl), rounded to a power of two (>= 2).

    48³ -> 4, 64³ -> 8, 96³ -> 8, 128³ -> 16, 160³ -> 16. Powers of two stay aligned with the
    stride-2 stages, so the SparK re-masking at coarser resolutions is exact.
    """
    scaled = reference_block * min(int(p) for p in patch_size) / reference_patch
    return max(2, 2 ** round(math.log2(max(scaled, 1e-6))))


# -- optimisation -------------------------------------------------------------------------------
def warmup_iterations(total_iters: int, fraction: float = 0.05, maximum: int | None = None) -> int:
    """Warm-up length as a share of the run (at least 1 iteration, at most ``maximum``)."""
    n = max(1, int(round(fraction * total_iters)))
    return min(n, maximum) if maximum else min(n, total_iters)


# -- the record ---------------------------------------------------------------------------------
def record_factory(pretext: nn.Module, data_info: dict[str, Any], patch_size: Sequence[int]
                   ) -> Callable[[int], CheckpointRecord]:
    """``steps -> CheckpointRecord`` for the checkpoint handler (see ``monai_ssl_plugin.checkpoint``)."""
    module = getattr(pretext, "module", pretext)
    info = dict(data_info)

    def record(steps: int) -> CheckpointRecord:
        return build_record(module.backbone, module, info, list(patch_size), steps=steps)

    return record


# -- inference (encoder only) -------------------------------------------------------------------
class LatentEncoder(nn.Module):
    """The encoder of a backbone adapter as a single-tensor network: ``x -> deepest feature map``.

    This is what the bundles' ``inference.yaml`` exposes (``format: latent``), so
    ``python -m monai.bundle verify_net_in_out`` and TorchScript export work on it. Parameter names
    are those of the downstream network under ``backbone.network.``.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(x)[-1]


def encoder_network(backbone: str = DEFAULT_BACKBONE, in_channels: int = 1, plans: str | None = None,
                    configuration: str = "3d_fullres", checkpoint: str | Path | None = None) -> LatentEncoder:
    """``LatentEncoder`` over the pretrained architecture.

    When ``checkpoint`` is an existing pretraining checkpoint, its record decides the architecture
    (the record is the contract; nothing is guessed); otherwise ``backbone`` / ``plans`` do.
    """
    if checkpoint and Path(checkpoint).is_file():
        from monai_ssl_plugin.backbones import NnUNetBackbone
        from monai_ssl_plugin.checkpoint import safe_load

        record = safe_load(checkpoint).get("record") or {}
        if str(record.get("backbone_family", "")).startswith("nnunet."):
            logger.info("Encoder architecture from the record of %s: %s.", checkpoint, record["backbone_family"])
            return LatentEncoder(NnUNetBackbone(**record["backbone_kwargs"]))
    return LatentEncoder(build_backbone(backbone, {"in_channels": in_channels}, plans, configuration))


def load_encoder_weights(encoder: LatentEncoder, checkpoint: str | Path) -> LatentEncoder:
    """Load pretrained weights into ``encoder``: a pretraining checkpoint (``final.pt``, key ``network``)
    or a plain state dict of the downstream network. Reports what loaded; refuses a load of nothing."""
    from monai_ssl_plugin.checkpoint import safe_load
    from monai_ssl_plugin.transfer.loading import load_weights

    state = safe_load(checkpoint)
    state = state.get("network", state)
    report = load_weights(encoder.backbone.network, state, include=lambda k: ".seg_layers." not in k and
                          not k.startswith("decoder."), log=logger.info)
    logger.info("Encoder weights from %s: %s", checkpoint, report.summary())
    return encoder


@torch.no_grad()
def encode_cases(encoder: nn.Module, source: Any, patch_size: Sequence[int], device: str | torch.device,
                 output_file: str | Path, inferer: Callable[..., torch.Tensor] | None = None) -> Path:
    """Embed every case of a data source: centre patch (zero-padded if smaller) -> encoder (through
    ``inferer`` if given, e.g. ``monai.inferers.SimpleInferer()``) -> mean over space.

    Writes ``{"case_ids": [...], "embeddings": (N, D)}`` to ``output_file`` (atomically)."""
    encoder = encoder.to(device).eval()
    patch = [int(p) for p in patch_size]
    rows = []
    for i in range(len(source)):
        image = torch.as_tensor(source.load(i), dtype=torch.float32)
        pads, slices = [], [slice(None)]
        for size, want in zip(image.shape[1:], patch):
            start = max(0, (size - want) // 2)
            slices.append(slice(start, start + want))
        image = image[tuple(slices)]
        for size, want in reversed(list(zip(image.shape[1:], patch))):
            pads += [0, max(0, want - size)]
        image = torch.nn.functional.pad(image, pads)
        batch = image[None].to(device)
        features = inferer(batch, encoder) if inferer is not None else encoder(batch)
        rows.append(features.flatten(2).mean(-1)[0].float().cpu())
    return atomic_save({"case_ids": list(source.case_ids), "embeddings": torch.stack(rows)}, output_file)


def check_override_ids(config_files: str | Path | Sequence[str | Path], ids: dict[str, Any]) -> None:
    """Refuse overrides of ids the config does not define: a misspelt id would otherwise be added
    as a new, unused entry and the run would silently use the default."""
    from monai.bundle import ConfigParser

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
    from monai.bundle import run as bundle_run

    from monai_ssl_plugin.engine.handlers.checkpoint import resume_mode
    from monai_ssl_plugin.engine.settings import check_overrides, clean_failed_start

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
