"""Write ``configs/ssl_init.yaml``: an overlay that trains an unchanged MONAI bundle from SSL weights.

``write_overlay(ssl, bundle)`` reads the bundle's train config (json/yaml), finds the network definition
(``network_def`` / ``network``), decides which sub-module receives the weights from its ``_target_``
(RetinaNet built with ``resnet_fpn_feature_extractor`` -> ``feature_extractor.body``; SwinUNETR ->
``swinViT``; UNETR -> ``vit``; DenseNet -> ``features``; ResNet -> all but ``fc``; SegResNet / UNet /
DynUNet -> their encoder; nnU-Net's ResidualEncoderUNet / PlainConvUNet -> ``encoder``), builds the network once to dry-run the load (so a wrong checkpoint fails now,
not after an hour of data loading), and writes an overlay that

- defines ``ssl_init#handler`` (an :class:`~.handler.SSLInitHandler`) and appends it to the trainer's
  handlers with MONAI's ``+`` merge key (``"+train#handlers": ["@ssl_init#handler"]``; ``ConfigParser``
  extends a list when a later config file prefixes its id with ``+``);
- with ``pretrained_lr_mult != 1`` replaces ``optimizer#params`` by two parameter groups
  (:func:`~.finetune.param_groups`), so schedulers see both groups from the start.

Run: ``python -m monai.bundle run --config_file "['configs/train.json','configs/ssl_init.yaml']"``.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from monai.bundle import ConfigParser

from monai_ssl_plugin.checkpoint import atomic_write_text
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.monai_bundles.load import load_pretrained
from monai_ssl_plugin.transfer.formats import read_weights

MARKER = "written by monai-ssl monai-overlay"
TRAIN_CONFIGS = ("train.json", "train.yaml", "train.yml")
HANDLER_TARGET = "monai_ssl_plugin.monai_bundles.SSLInitHandler"
PARAM_GROUPS_TARGET = "monai_ssl_plugin.monai_bundles.param_groups"
# class (or factory) name of network_def -> (target written to the overlay, what it means)
_NETWORK_TARGETS: dict[str, tuple[str, str]] = {
    "RetinaNet": ("feature_extractor.body", "the ResNet inside the RetinaNet feature extractor"),
    "RetinaNetDetector": ("network.feature_extractor.body", "the ResNet inside the detector's RetinaNet"),
    "SwinUNETR": ("swinViT", "the Swin transformer encoder"),
    "UNETR": ("vit", "the ViT encoder"),
    "DenseNet": ("features", "all but the classification layers"),
    "ResNet": ("auto", "all but the fc head"),
    "SegResNet": ("auto", "convInit + down_layers (the encoder)"),
    "UNet": ("auto", "the down path and the bottom (the encoder)"),
    "DynUNet": ("auto", "input_block + downsamples + bottleneck (the encoder)"),
    "ResidualEncoderUNet": ("auto", "nnU-Net's encoder: stem + stages (names as nnU-Net's trainers load them)"),
    "PlainConvUNet": ("auto", "nnU-Net's encoder: stages (names as nnU-Net's trainers load them)"),
}
_ALIASES = {**{f"resnet{d}": "ResNet" for d in (10, 18, 34, 50, 101, 152, 200)}, "ResNetFeatures": "ResNet",
            **{n: "DenseNet" for n in ("DenseNet121", "DenseNet169", "DenseNet201", "DenseNet264", "densenet121",
                                       "densenet169", "densenet201", "densenet264", "Densenet121", "Densenet169",
                                       "Densenet201", "Densenet264")},
            "Unet": "UNet", "unet": "UNet", "SegResNetVAE": "SegResNet", "DynUnet": "DynUNet", "Dynunet": "DynUNet",
            "SwinUnetr": "SwinUNETR"}
_INTENSITY = {"NormalizeIntensity", "NormalizeIntensityd", "ScaleIntensityRange", "ScaleIntensityRanged",
              "ScaleIntensityRangePercentiles", "ScaleIntensityRangePercentilesd", "ScaleIntensity", "ScaleIntensityd"}
_PARAMS_EXPR = re.compile(r"^\$\s*@([\w#:]+)((?:\.\w+)*)\.parameters\(\)\s*$")


@dataclass
class OverlayPlan:
    """What :func:`write_overlay` decided and wrote."""

    path: Path
    train_config: Path
    network_id: str
    network_class: str
    target: str
    target_meaning: str
    handlers_key: str
    optimizer_id: str | None
    normalization: str | None
    checked: bool
    command: str


def flag(value: Any, name: str) -> bool:
    """A boolean option as the command line passes it (fire gives ``--check false`` as the string ``"false"``)."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise PluginError(f"--{name} {value!r} is not true or false.", f"Pass --{name} true or --{name} false.")
    return bool(value)


def _parser(config: dict) -> ConfigParser:
    return ConfigParser(config)


def _get(parser, id_: str) -> Any:
    return parser[id_] if id_ in parser else None


def _deref(parser, node: Any, depth: int = 0) -> Any:
    """Follow plain ``"@id"`` references (not expressions)."""
    while isinstance(node, str) and node.startswith("@") and depth < 10 and node[1:] in parser:
        node, depth = parser[node[1:]], depth + 1
    return node


def _class_name(node: Any) -> str | None:
    if isinstance(node, Mapping) and isinstance(node.get("_target_"), str):
        return node["_target_"].split(".")[-1].split("::")[-1]
    if isinstance(node, str):
        for name in re.findall(r"([A-Za-z_]\w*)\s*\(", node):
            base = _ALIASES.get(name, name)
            if base in _NETWORK_TARGETS:
                return name
    return None


def _find_train_config(bundle: Path, train_config: str | None) -> Path:
    if train_config:
        p = Path(train_config)
        p = p if p.is_absolute() else bundle / p
        if not p.is_file():
            raise PluginError(f"Train config {p} does not exist.", "Pass --train_config configs/<file>.")
        return p
    for name in TRAIN_CONFIGS:
        if (bundle / "configs" / name).is_file():
            return bundle / "configs" / name
    raise PluginError(f"{bundle} has no configs/train.json or configs/train.yaml.",
                      "Pass the bundle's root directory, or --train_config configs/<file>.")


def _network_ids(parser) -> tuple[str, str]:
    """(id of the network definition, reference the handler gets: the instantiated network)."""
    for id_ in ("network_def", "network"):
        if id_ in parser:
            ref = "@network" if "network" in parser else f"@{id_}"
            return id_, ref
    raise PluginError("The train config defines neither `network_def` nor `network`.",
                      "Name the network `network_def` as the model zoo does, or use load_pretrained() in code.")


def _decide_target(parser, net_id: str, target: str) -> tuple[str, str, str]:
    """(class name, target to write, meaning) from the network definition's ``_target_``."""
    node = _deref(parser, parser[net_id])
    cls = _class_name(node) or "<unknown>"
    base = _ALIASES.get(cls, cls)
    if target != "auto":
        return cls, target, "given by --target"
    if base not in _NETWORK_TARGETS:
        raise PluginError(f"Cannot tell which sub-module of `{net_id}` ({cls}) receives SSL weights.",
                          "Pass --target <sub-module prefix> (e.g. encoder), or '' for the whole network.")
    tgt, meaning = _NETWORK_TARGETS[base]
    if base in ("RetinaNet", "RetinaNetDetector"):
        retina = node if base == "RetinaNet" else _deref(parser, node.get("network") if isinstance(node, Mapping) else None)
        fe = _deref(parser, retina.get("feature_extractor")) if isinstance(retina, Mapping) else None
        text = fe.get("_target_", "") if isinstance(fe, Mapping) else str(fe)
        if "resnet_fpn_feature_extractor" not in text:
            raise PluginError(f"`{net_id}` is a {cls} whose feature_extractor is not built with "
                              f"resnet_fpn_feature_extractor ({str(text)[:80]!r}), so its body may not be a ResNet.",
                              "Pass --target <prefix of the module that matches the pretrained backbone>.")
    return cls, tgt, meaning


def _normalization(parser, config: dict, given: str | None) -> str | None:
    if given != "auto":
        return given
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            t = node.get("_target_")
            if isinstance(t, str) and t.split(".")[-1] in _INTENSITY:
                found.add(t.split(".")[-1])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config.get("train", config))
    return found.pop() if len(found) == 1 else None


def _trainer(parser) -> tuple[str, Any]:
    """(id, config) of the trainer: ``train#trainer`` (zoo bundles) or top-level ``trainer`` (zoo templates)."""
    for id_ in ("train#trainer", "trainer"):
        node = _get(parser, id_)
        if isinstance(node, Mapping):
            return id_, node
    return "train#trainer", None


def _handlers_key(parser) -> str:
    """The list id the overlay extends with ``+``: ``train#handlers``, ``handlers`` or the trainer's own list."""
    if isinstance(_get(parser, "train#handlers"), list):
        return "+train#handlers"
    trainer_id, trainer = _trainer(parser)
    if trainer is None:
        raise PluginError("The train config has neither `train#trainer` nor `trainer`, so there is nothing to attach "
                          "the SSL handler to.",
                          "Add SSLInitHandler to your trainer's handlers by hand (see docs/monai.md).")
    th = trainer.get("train_handlers")
    if th is None:
        return f"{trainer_id}#train_handlers"
    if isinstance(th, list):
        return f"+{trainer_id}#train_handlers"
    if isinstance(th, str) and th.startswith("@") and isinstance(_get(parser, th[1:]), list):
        return "+" + th[1:]
    raise PluginError(f"`{trainer_id}#train_handlers` is an expression ({str(th)[:60]!r}) the overlay cannot extend.",
                      "Add '@ssl_init#handler' to that handler list by hand (see docs/monai.md).")


def _optimizer(parser) -> tuple[str, Mapping[str, Any], str] | None:
    """(optimizer id, its config, network expression for param_groups) when recognisable."""
    trainer = _trainer(parser)[1]
    ref = trainer.get("optimizer") if isinstance(trainer, Mapping) else None
    opt_id = ref[1:] if isinstance(ref, str) and ref.startswith("@") and ref[1:] in parser else (
        "optimizer" if "optimizer" in parser else None)
    if opt_id is None:
        return None
    node = parser[opt_id]
    if not isinstance(node, Mapping) or not isinstance(node.get("params"), str):
        return None
    m = _PARAMS_EXPR.match(node["params"])
    if m is None:
        return None
    net_expr = f"@{m.group(1)}" if not m.group(2) else f"$@{m.group(1)}{m.group(2)}"
    return opt_id, node, net_expr


def _dry_run(parser, net_id: str, ssl: str, target: str, settings: dict[str, Any], log, bundle: Path) -> bool:
    """Build the network definition and load into it: every check runs before training starts."""
    sys.path.insert(0, str(bundle))  # `scripts.` targets resolve as in `monai.bundle run`
    try:
        network = parser.get_parsed_content(net_id, instantiate=True)
    except Exception as e:  # the config may need data or devices that are not here; the handler checks at run time
        if log is not None:
            log(f"[monai-ssl] note: could not build `{net_id}` for a dry run ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:120] if str(e) else ''}); the handler checks when training starts")
        return False
    finally:
        if str(bundle) in sys.path:
            sys.path.remove(str(bundle))
    load_pretrained(network, ssl, target, log=log, **settings)
    return True


def _load_train_config(bundle: Path, train_config: str | None) -> tuple[Path, dict, Any]:
    """(train config file, its content, a parser over it)."""
    cfg_path = _find_train_config(bundle, train_config)
    config = ConfigParser.load_config_files(str(cfg_path))
    return cfg_path, config, _parser(config)


def _output_path(bundle: Path, output: str | Path | None, overwrite: bool) -> Path:
    """Where the overlay goes; an existing file this command did not write is kept unless ``overwrite``."""
    out = Path(output) if output else bundle / "configs" / "ssl_init.yaml"
    out = out if out.is_absolute() else bundle / out
    if out.exists() and MARKER not in out.read_text()[:400] and not overwrite:
        raise PluginError(f"{out} exists and was not written by this command.", "Pass --output elsewhere or --overwrite.")
    return out


def _overlay(ssl_path: Path, plan: OverlayPlan, net_ref: str, settings: dict[str, Any], freeze_epochs: int,
             linear_probe: bool, pretrained_lr_mult: float, opt: tuple[str, Mapping[str, Any], str] | None
             ) -> dict[str, Any]:
    """The overlay: ``ssl_init`` (settings + handler), the handler appended, optionally two LR groups."""
    ssl_init: dict[str, Any] = {"checkpoint": str(ssl_path), "target": plan.target,
                                "min_fraction": settings["min_fraction"], "freeze_epochs": int(freeze_epochs),
                                "linear_probe": bool(linear_probe), "axis_order": settings["axis_order"],
                                "on_axis_mismatch": settings["on_axis_mismatch"], "normalization": plan.normalization,
                                "on_normalization_mismatch": settings["on_normalization_mismatch"]}
    handler: dict[str, Any] = {"_target_": HANDLER_TARGET, "load_path": "@ssl_init#checkpoint", "network": net_ref}
    for key in ("target", "min_fraction", "freeze_epochs", "linear_probe", "axis_order", "on_axis_mismatch",
                "normalization", "on_normalization_mismatch"):
        handler[key] = f"@ssl_init#{key}"
    for key in ("backbone_family", "source_axis_order"):
        if settings[key]:
            ssl_init[key], handler[key] = settings[key], f"@ssl_init#{key}"
    overlay: dict[str, Any] = {"ssl_init": ssl_init}
    if pretrained_lr_mult != 1.0 and opt is not None:
        opt_id, _, net_expr = opt
        ssl_init["pretrained_lr_mult"] = float(pretrained_lr_mult)
        overlay[f"{opt_id}#params"] = {"_target_": PARAM_GROUPS_TARGET, "network": net_expr, "target": "@ssl_init#target",
                                       "lr": f"@{opt_id}#lr", "pretrained_lr_mult": "@ssl_init#pretrained_lr_mult"}
    ssl_init["handler"] = handler
    overlay[plan.handlers_key] = ["@ssl_init#handler"]
    return overlay


def _run_command(bundle: Path, cfg_path: Path, out: Path, overrides: Mapping[str, Any]) -> str:
    """The ``python -m monai.bundle run`` command that trains the unchanged bundle with the overlay."""
    rel_cfg = cfg_path.relative_to(bundle).as_posix() if cfg_path.is_relative_to(bundle) else str(cfg_path)
    rel_out = out.relative_to(bundle).as_posix() if out.is_relative_to(bundle) else str(out)
    extra = " --logging_file configs/logging.conf" if (bundle / "configs" / "logging.conf").is_file() else ""
    extra += "".join(f" --{k} {shlex.quote(json.dumps(v) if not isinstance(v, str) else v)}" for k, v in overrides.items())
    return (f"cd {bundle} && python -m monai.bundle run --config_file \"['{rel_cfg}','{rel_out}']\" "
            f"--meta_file configs/metadata.json{extra}")


def _header(plan: OverlayPlan, source: str, pretrained_lr_mult: float) -> list[str]:
    """The overlay's comment lines: what it does and the command that uses it."""
    lr_note = (f"x{pretrained_lr_mult} of the optimizer LR" if pretrained_lr_mult != 1.0
               else "same as the rest (re-run with --pretrained_lr_mult to lower it)")
    return [
        f"# SSL initialisation overlay, {MARKER}.",
        f"# Source: {source}",
        f"# Network: `{plan.network_id}` ({plan.network_class}); receives the weights: {plan.target} "
        f"({plan.target_meaning}).",
        f"# Normalisation of this bundle's train pipeline: {plan.normalization or 'not detected (not checked)'}.",
        f"# Pretrained-part LR: {lr_note}.",
        f"# Dry run at writing time: {'passed' if plan.checked else 'not run'}. Train the unchanged bundle from these "
        "weights:",
        f"#   {plan.command}",
        "# `+id` extends the list `id` of the earlier config file (monai.bundle ConfigParser merge key).",
        "",
    ]


def write_overlay(ssl: str | Path, bundle: str | Path, *, target: str = "auto", output: str | Path | None = None,
                  train_config: str | None = None, min_fraction: float = 0.9, freeze_epochs: int = 0,
                  linear_probe: bool = False, pretrained_lr_mult: float = 1.0, normalization: str | None = "auto",
                  axis_order: str = "monai", on_axis_mismatch: str = "permute", backbone_family: str | None = None,
                  source_axis_order: str | None = None, check: bool = True, overwrite: bool = False,
                  overrides: Mapping[str, Any] | None = None, on_normalization_mismatch: str = "warn",
                  log: Callable[[str], None] | None = print) -> OverlayPlan:
    """Write the SSL-init overlay for ``bundle`` (default ``<bundle>/configs/ssl_init.yaml``).

    Args:
        ssl: pretraining checkpoint, SSL bundle directory or bare state dict file (needs ``backbone_family``).
        bundle: the existing bundle's root directory (holding ``configs/train.json|yaml``).
        target: ``"auto"`` (decided from ``network_def``'s ``_target_``) or a sub-module prefix.
        normalization: ``"auto"`` reads the intensity transform of the bundle's train pipeline; ``"any"``
            skips the check; ``None`` only reports.
        pretrained_lr_mult: != 1 also writes ``optimizer#params`` as two groups (pretrained / new).
        check: build ``network_def`` and dry-run the load now.
        overrides: config ids overridden on the ``monai.bundle run`` command line (e.g. ``{"widths": [8, 16, 32, 64]}``);
            applied to the dry run and added to the printed command.
        overwrite: replace an existing overlay that this command did not write.
        on_normalization_mismatch: ``"warn"`` (default: load, with a warning naming both normalisations) or
            ``"refuse"``.
        other arguments: as in :class:`~.handler.SSLInitHandler`.
    """
    linear_probe, check, overwrite = (flag(v, n) for v, n in ((linear_probe, "linear_probe"), (check, "check"),
                                                              (overwrite, "overwrite")))
    bundle = Path(bundle).expanduser().resolve()
    ssl_path = Path(ssl).expanduser().resolve()
    src = read_weights(ssl_path, backbone_family=backbone_family, axis_order=source_axis_order, log=log)
    cfg_path, config, parser = _load_train_config(bundle, train_config)
    net_id, net_ref = _network_ids(parser)
    cls, tgt, meaning = _decide_target(parser, net_id, target)
    norm = _normalization(parser, config, normalization)
    handlers_key = _handlers_key(parser)
    opt = _optimizer(parser)
    if pretrained_lr_mult != 1.0 and (opt is None or "lr" not in opt[1]):
        raise PluginError("pretrained_lr_mult needs an optimizer `optimizer` with `lr` and `params: $@network.parameters()`"
                          " in the train config, which was not found.",
                          "Use param_groups() in the optimizer's params by hand (see docs/monai.md), or keep the "
                          "multiplier at 1.")
    settings = dict(min_fraction=float(min_fraction), axis_order=axis_order, on_axis_mismatch=on_axis_mismatch,
                    normalization=norm, backbone_family=backbone_family, source_axis_order=source_axis_order,
                    on_normalization_mismatch=on_normalization_mismatch)
    overrides = dict(overrides or {})
    checked = False
    if check:
        dry = _load_train_config(bundle, train_config)[2]
        dry.update(overrides)
        checked = _dry_run(dry, net_id, str(ssl_path), tgt, settings, log, bundle)
    out = _output_path(bundle, output, overwrite)
    plan = OverlayPlan(out, cfg_path, net_id, cls, tgt, meaning, handlers_key, opt[0] if opt else None, norm, checked,
                       _run_command(bundle, cfg_path, out, overrides))
    overlay = _overlay(ssl_path, plan, net_ref, settings, freeze_epochs, linear_probe, pretrained_lr_mult, opt)
    text = "\n".join(_header(plan, src.describe(), pretrained_lr_mult))
    atomic_write_text(text + yaml.safe_dump(overlay, sort_keys=False, default_flow_style=False), out)
    if log is not None:
        log(f"[monai-ssl] wrote {out}: {tgt} of `{net_id}` ({cls}) <- {src.describe()}")
    return plan


def monai_overlay(ssl: str, bundle: str, target: str = "auto", output: str | None = None, freeze_epochs: int = 0,
                  linear_probe: bool = False, pretrained_lr_mult: float = 1.0, normalization: str | None = "auto",
                  axis_order: str = "monai", on_axis_mismatch: str = "permute", min_fraction: float = 0.9,
                  backbone_family: str | None = None, source_axis_order: str | None = None,
                  train_config: str | None = None, check: bool = True, overwrite: bool = False,
                  overrides: dict | None = None, on_normalization_mismatch: str = "warn") -> str:
    """CLI entry (``monai-ssl monai-overlay --ssl CKPT_OR_SSL_BUNDLE --bundle BUNDLE_DIR [--target ...]``).

    Writes ``BUNDLE_DIR/configs/ssl_init.yaml`` and returns the text to print (where it went and the
    ``python -m monai.bundle run`` command that uses it).
    """
    plan = write_overlay(ssl, bundle, target=target, output=output, train_config=train_config,
                         min_fraction=min_fraction, freeze_epochs=freeze_epochs, linear_probe=linear_probe,
                         pretrained_lr_mult=pretrained_lr_mult, normalization=normalization, axis_order=axis_order,
                         on_axis_mismatch=on_axis_mismatch, backbone_family=backbone_family,
                         source_axis_order=source_axis_order, check=check, overwrite=overwrite, overrides=overrides,
                         on_normalization_mismatch=on_normalization_mismatch)
    return (f"wrote {plan.path}\n  network `{plan.network_id}` ({plan.network_class}) -> SSL weights into {plan.target} "
            f"({plan.target_meaning}); handler appended via `{plan.handlers_key}`\n"
            f"train with:\n  {plan.command}")
