"""Every shipped bundle (monai_ssl_plugin/bundles/) against the MONAI Bundle specification and the model zoo's conventions.

One test set walks all bundles, so conventions cannot drift from one bundle to the next. Every
bundle is checked against the specification and the zoo's CI rules; the self-supervised
pretraining bundles (``*_ssl_pretraining``) also expose their encoder through ``inference.yaml``
with a ``latent`` output.
"""

import importlib
import json
import re
import subprocess
import sys

import pytest
import yaml
from monai.bundle import ConfigParser

from monai_ssl_plugin.bundles import BUNDLES_DIR, list_bundles, train_configs

BUNDLES = [BUNDLES_DIR / name for name in list_bundles()]
SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
REQUIRED_FILES = ["LICENSE", "configs/metadata.json", "configs/logging.conf", "docs/README.md"]
SSL_REQUIRED_FILES = ["configs/train.yaml", "configs/inference.yaml"]
META_KEYS = ["schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
             "required_packages_version", "name", "task", "description", "authors", "copyright", "data_source",
             "data_type", "intended_use", "references", "network_data_format"]
TENSOR_KEYS = ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data", "channel_def"]
TRAIN_IDS = ["bundle_root", "device", "dataset_dir", "network_def", "train#trainer", "train#trainer#max_epochs",
             "train#dataset", "train#handlers", "run"]
SSL_TRAIN_IDS = ["output_dir", "train#dataloader", "optimizer", "pretext", "patch_size", "batch_size", "resume",
                 "seed", "amp"]
INFERENCE_IDS = ["bundle_root", "device", "network_def", "inferer"]
# the model zoo's ci/bundle_custom_data.py keeps the same kind of list (it excludes lung_nodule_ct_detection):
# verify_net_in_out needs a network returning one tensor
EXCLUDE_VERIFY_SHAPE = {"detection_finetune": "RetinaNet returns a dict of head outputs"}
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")

ids = [b.name for b in BUNDLES]


def _is_ssl(bundle):
    return bundle.name.endswith("_ssl_pretraining")


def _meta(bundle):
    return json.loads((bundle / "configs" / "metadata.json").read_text())


def _config(bundle, name):
    """A config as MONAI reads it: train.yaml merged after base.yaml where the bundle has one."""
    if name == "train.yaml":
        return ConfigParser.load_config_files(train_configs(bundle))
    return yaml.safe_load((bundle / "configs" / name).read_text())


def _has_id(config, id_):
    node = config
    for part in id_.split("#"):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def _targets(node):
    if isinstance(node, dict):
        if "_target_" in node:
            yield node["_target_"]
        for v in node.values():
            yield from _targets(v)
    elif isinstance(node, list):
        for v in node:
            yield from _targets(v)


def test_there_are_bundles():
    assert BUNDLES, f"no bundles found in {BUNDLES_DIR}"


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_layout_and_name(bundle):
    assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", bundle.name), "zoo names are lower-case words joined by _"
    for rel in REQUIRED_FILES + (SSL_REQUIRED_FILES if _is_ssl(bundle) else []):
        assert (bundle / rel).is_file() and (bundle / rel).stat().st_size > 0, f"{bundle.name}: missing {rel}"
    assert (bundle / "models").is_dir()
    assert "Apache License" in (bundle / "LICENSE").read_text()[:500]
    assert not (bundle / "scripts").exists(), "bundles reference the installed package; no code in the bundle"
    too_big = [p for p in bundle.rglob("*") if p.is_file() and p.stat().st_size > 25 * 2**20]
    assert not too_big, f"files over the zoo's 25 MB limit: {too_big}"


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_metadata_mandatory_keys(bundle):
    meta = _meta(bundle)
    missing = [k for k in META_KEYS if k not in meta]
    assert not missing, f"{bundle.name}: metadata lacks {missing}"
    assert isinstance(meta["changelog"], dict)
    assert meta["schema"] == SCHEMA
    assert SEMVER.match(meta["version"]) and meta["version"] in meta["changelog"]
    assert isinstance(meta["required_packages_version"], dict) and "monai-ssl-plugin" in meta["required_packages_version"]
    assert meta.get("optional_packages_version", meta["required_packages_version"]) == meta["required_packages_version"]
    fmt = meta["network_data_format"]
    assert set(fmt) >= {"inputs", "outputs"} and "image" in fmt["inputs"] and "pred" in fmt["outputs"]
    for tensor in [*fmt["inputs"].values(), *fmt["outputs"].values()]:
        assert not [k for k in TENSOR_KEYS if k not in tensor]
    if _is_ssl(bundle):
        assert fmt["outputs"]["pred"]["format"] == "latent", "SSL bundles expose the encoder: a latent output"


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_configs_have_zoo_ids_and_importable_targets(bundle):
    configs = {name: _config(bundle, name) for name in ("train.yaml", "inference.yaml")
               if (bundle / "configs" / name).is_file()}
    assert configs, f"{bundle.name}: no train.yaml or inference.yaml"
    if "train.yaml" in configs:
        wanted = TRAIN_IDS + (SSL_TRAIN_IDS if _is_ssl(bundle) else [])
        assert not [i for i in wanted if not _has_id(configs["train.yaml"], i)]
    if "inference.yaml" in configs:
        assert not [i for i in INFERENCE_IDS if not _has_id(configs["inference.yaml"], i)]
    for target in {t for config in configs.values() for t in _targets(config)}:
        module, _, name = target.rpartition(".")
        if module:  # bare names (e.g. "DistributedSampler") are looked up by MONAI's component locator
            assert hasattr(importlib.import_module(module), name), f"{bundle.name}: _target_ {target} does not import"


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_logging_conf_passes_monai_allowlist(bundle):
    from monai.bundle.workflows import _reject_executable_logging_config

    _reject_executable_logging_config(str(bundle / "configs" / "logging.conf"))


VERIFIABLE = [b for b in BUNDLES if (b / "configs" / "inference.yaml").is_file() and b.name not in EXCLUDE_VERIFY_SHAPE]


@pytest.mark.parametrize("bundle", VERIFIABLE, ids=[b.name for b in VERIFIABLE])
def test_verify_net_in_out(bundle, tmp_path):
    configs = bundle / "configs"
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
                           "--config_file", str(configs / "inference.yaml"), "--meta_file", str(configs / "metadata.json"),
                           "--device", "cpu"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verified with no error" in proc.stdout + proc.stderr


SSL_BUNDLES = [b for b in BUNDLES if _is_ssl(b)]
OVERLAY_REF = re.compile(r"@([A-Za-z_][\w#]*)")


def _overlay_refs(node):
    if isinstance(node, str):
        yield from OVERLAY_REF.findall(node)
    elif isinstance(node, dict):
        for v in node.values():
            yield from _overlay_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _overlay_refs(v)


@pytest.mark.parametrize("bundle", SSL_BUNDLES, ids=[b.name for b in SSL_BUNDLES])
def test_multi_gpu_overlay_merges_with_train(bundle):
    """Every pretraining bundle ships configs/multi_gpu_train.yaml, and train.yaml + the overlay parse together.

    No torchrun here: the merged config is read the way ``monai.bundle run --config_file "[base, train,
    overlay]"`` reads it, every ``@id`` the overlay references must exist after the merge, the overlay adds
    to the bundle's imports (``+imports``) instead of replacing them, and ids that need no process group or
    data are parsed.
    """
    configs = bundle / "configs"
    overlay = configs / "multi_gpu_train.yaml"
    assert overlay.is_file(), f"{bundle.name}: configs/multi_gpu_train.yaml is missing (link _shared's)"
    train_imports = _config(bundle, "train.yaml")["imports"]
    overlay_cfg = _config(bundle, "multi_gpu_train.yaml")
    assert "imports" not in overlay_cfg, "a plain `imports` would replace the bundle's; use `+imports`"

    parser = ConfigParser()
    parser.read_config(train_configs(bundle, multi_gpu=True))
    assert set(train_imports) < set(parser["imports"]), f"{bundle.name}: the overlay dropped imports"
    parser.read_meta(str(configs / "metadata.json"))
    for ref in sorted(set(_overlay_refs(overlay_cfg))):
        assert ref in parser, f"{bundle.name}: multi_gpu_train.yaml references @{ref}, which train.yaml lacks"
    for id_ in ("train#trainer#pretext", "train#trainer#train_handlers", "train#dataloader#dataset", "network",
                "device", "initialize", "run", "finalize"):
        assert id_ in parser, f"{bundle.name}: merged config lacks {id_}"
    assert parser.get_parsed_content("ddp_device") == "auto"
    expected = int(parser.get_parsed_content("batch_size")) * int(parser.get_parsed_content("total_iterations"))
    assert parser.get_parsed_content("train#patches#num_samples") == expected  # world size 1 outside torchrun
    assert parser["train#trainer#pretext"] == "@pretext_ddp"
    assert parser["train#dataloader#dataset#_target_"] == "monai_ssl_plugin.engine.ddp.RankShardedDataset"


SHARED = BUNDLES_DIR / "_shared"


@pytest.mark.parametrize("bundle", SSL_BUNDLES, ids=[b.name for b in SSL_BUNDLES])
def test_shared_configs_are_the_one_copy(bundle):
    """base.yaml and multi_gpu_train.yaml of every pretraining bundle are _shared's, byte for byte."""
    for name in ("base.yaml", "multi_gpu_train.yaml"):
        assert (bundle / "configs" / name).read_bytes() == (SHARED / name).read_bytes(), f"{bundle.name}: {name}"


@pytest.mark.parametrize("bundle", SSL_BUNDLES, ids=[b.name for b in SSL_BUNDLES])
def test_train_yaml_holds_only_the_method(bundle):
    """A pretraining train.yaml repeats nothing of base.yaml: every id it sets changes or adds a value."""
    base = yaml.safe_load((SHARED / "base.yaml").read_text())
    method = yaml.safe_load((bundle / "configs" / "train.yaml").read_text())
    parser = ConfigParser(base)
    repeated = [k for k, v in method.items() if not k.startswith("+") and k in parser and parser[k] == v]
    assert not repeated, f"{bundle.name}: train.yaml repeats base.yaml's {repeated}"
    assert "bundle_root" not in method, "bundle_root is set once, in base.yaml"
