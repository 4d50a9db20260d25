"""What ``monai-ssl pretrained list|info|get`` prints (the CLI only calls :func:`run_pretrained`)."""

from __future__ import annotations

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretrained.cache import ENV_HOME, cache_root
from monai_ssl_plugin.pretrained.catalog import CATALOG
from monai_ssl_plugin.pretrained.fetch import get, info


def catalog_table() -> str:
    """One line per entry: name, architecture family, pretraining data, licence."""
    rows = [f"{'name':<28} {'use with':<16} {'licence':<12} title"]
    for e in CATALOG.values():
        use = "nnU-Net -tr" if e.converter == "nnssl_resenc" else "MONAI overlay"
        rows.append(f"{e.name:<28} {use:<16} {e.licence.split()[0]:<12} {e.title}")
    rows.append(f"cache: {cache_root()} (set {ENV_HOME} to move it)")
    return "\n".join(rows)


def _how_to_use(name: str, path: str) -> str:
    if CATALOG[name].converter == "nnssl_resenc":
        return (f"use it: export nnUNet_SSL_pretrained={path}; nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainerSSL "
                "(plans with the same architecture: monai-ssl nnunet-plans DATASET --checkpoint " + path + ")")
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
