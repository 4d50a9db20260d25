"""What ``monai-ssl pretrained list|info|get`` prints (the CLI only calls :func:`run_pretrained`)."""

from __future__ import annotations

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretrained.cache import ENV_HOME, cache_root
from monai_ssl_plugin.pretrained.catalog import CATALOG
from monai_ssl_plugin.pretrained.fetch import get, info


def _short_licence(licence: str) -> str:
    """The licence's SPDX-like first word, or "unverified" where the catalog could not read one."""
    return "unverified" if licence.startswith("not verified") else licence.split()[0]


def catalog_table() -> str:
    """One line per entry: name, architecture family, pretraining data, licence."""
    rows = [f"{'name':<28} {'use with':<18} {'licence':<12} title"]
    uses = {"nnssl_resenc": "nnU-Net -tr, MONAI", "nnssl_primus": "nnU-Net -tr"}
    for e in CATALOG.values():
        use = uses.get(e.converter, "MONAI overlay")
        rows.append(f"{e.name:<28} {use:<18} {_short_licence(e.licence):<12} {e.title}")
    rows.append(f"cache: {cache_root()} (set {ENV_HOME} to move it)")
    return "\n".join(rows)


def _how_to_use(name: str, path: str) -> str:
    if CATALOG[name].converter == "nnssl_primus":
        return (f"use it: monai-ssl nnunet-plans DATASET --checkpoint {path} (Primus-M at its pretraining patch "
                f"160^3); export nnUNet_SSL_pretrained={path}; nnUNetv2_train DATASET 3d_fullres FOLD -p nnUNetPlans_ssl "
                "-tr nnUNetTrainerSSL\nor the original file (in the cache folder) with nnU-Net master: "
                "nnUNetv2_preprocess_like_nnssl ... -pc <file>, nnUNetv2_train_pretrained ... -tr PretrainedTrainer_Primusx")
    if CATALOG[name].converter == "nnssl_resenc":
        return (f"use it: export nnUNet_SSL_pretrained={path}; nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainerSSL "
                "(plans with the same architecture: monai-ssl nnunet-plans DATASET --checkpoint " + path + ")\n"
                "or in a MONAI bundle whose network_def is nnU-Net's ResidualEncoderUNet (the record's arch_kwargs): "
                f"monai-ssl monai-overlay --ssl {path} --bundle BUNDLE")
    return f"use it: monai-ssl monai-overlay --ssl {path} --bundle BUNDLE (or load_pretrained(net, '{path}'))"


def run_pretrained(action: str, name: str | None, file: str | None = None, force: bool = False) -> str:
    """The text each action prints; one-line PluginErrors for a missing or unknown NAME."""
    if action == "list":
        return catalog_table()
    if not name:
        raise PluginError(f"`pretrained {action}` needs a NAME.", "Run `monai-ssl pretrained list` for the names.")
    if action == "info":
        return "\n".join(f"{k + ':':<14} {v}" for k, v in info(name).items() if v)
    path = str(get(name, file=file, force=force))
    return f"{path}\n{_how_to_use(name, path)}"
