"""Every shipped bundle against the MONAI model zoo's premerge rules, written here as facts.

The facts come from the zoo's CONTRIBUTING.md and ci/ (verify_bundle.py, bundle_custom_data.py,
utils.py); no zoo code is used. What its CI does, in order: download every file ``large_files.yml``
lists (``path``, ``url``, optional ``hash_val`` / ``hash_type``) unless it is already there; require
``LICENSE`` and ``configs/metadata.json``, then ``models/model.pt`` and ``configs/inference.*``;
require ``version`` in ``changelog``; validate the metadata; check ``network_def`` against
``network_data_format`` (``verify_net_in_out``) and export it to TorchScript with ``models/model.pt``
loaded strictly (``ckpt_export``), unless the bundle is on the zoo's exclusion lists, which
CONTRIBUTING.md pairs with a statement in ``docs/README.md``. The real CI run (commands and output)
is in docs/sharing.md.
"""

import json

import pytest
import torch
import yaml
from ignite.handlers import Checkpoint
from monai.bundle import ConfigParser

from monai_ssl_plugin.bundles import BUNDLES_DIR, copy_bundle, list_bundles, train_configs
from monai_ssl_plugin.checkpoint import sha256_file
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.sharing.zoo import MODEL_FILE, initial_state, network_def, write_initial_weights

BUNDLES = [BUNDLES_DIR / name for name in list_bundles()]
ids = [b.name for b in BUNDLES]

# ci/verify_bundle.py: necessary_files_list, preferred_files_list
NECESSARY_FILES = ["configs/metadata.json", "LICENSE"]
INFERENCE_SUFFIXES = ("json", "yaml", "yml")
# ci/utils.py SUPPORTED_HASH_TYPES; CONTRIBUTING.md: hash_val and hash_type are optional
HASH_TYPES = {"", "md5", "sha1", "sha256", "sha512"}
# CONTRIBUTING.md, "Preferred Files and Keys"
INFERENCE_KEYS = ["bundle_root", "device", "network_def", "inferer"]
TRAIN_KEYS = ["bundle_root", "device", "dataset_dir"]
TRAIN_SECTION_KEYS = ["train#trainer", "train#trainer#max_epochs", "train#dataset", "train#dataset#data", "train#handlers"]
VALIDATE_SECTION_KEYS = ["validate#evaluator", "validate#handlers", "validate#dataset", "validate#dataset#data"]
# CONTRIBUTING.md: a bundle without TorchScript says so in docs/README.md (and joins exclude_verify_torchscript_list)
NO_TORCHSCRIPT = "TorchScript is not supported"
NO_SHAPE_CHECK = "verify_net_in_out is not applicable"


def _readme(bundle):
    return (bundle / "docs" / "README.md").read_text()


def _large_files(bundle):
    return yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]


def _train_config(bundle):
    return ConfigParser(ConfigParser.load_config_files(train_configs(bundle)))


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_files_the_zoo_requires(bundle):
    for rel in NECESSARY_FILES:
        assert (bundle / rel).is_file(), f"{bundle.name}: {rel} is necessary"
    assert [s for s in INFERENCE_SUFFIXES if (bundle / "configs" / f"inference.{s}").is_file()], "no configs/inference.*"
    entries = _large_files(bundle)
    model = [e for e in entries if e["path"] == MODEL_FILE]
    assert len(model) == 1, f"{bundle.name}: large_files.yml must list {MODEL_FILE} once (the zoo downloads it)"
    for entry in entries:
        assert entry["url"].startswith("https://"), f"{bundle.name}: every large file needs a download url"
        assert str(entry.get("hash_type", "")).lower() in HASH_TYPES
        assert not entry.get("hash_val") or entry.get("hash_type"), "a hash_val needs its hash_type"


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_shipped_weights_match_large_files(bundle):
    """Weights shipped in the package are the file large_files.yml describes (the zoo then skips the download)."""
    entry = next(e for e in _large_files(bundle) if e["path"] == MODEL_FILE)
    shipped = bundle / MODEL_FILE
    if shipped.is_file():
        assert entry["hash_type"] == "sha256" and entry["hash_val"] == sha256_file(shipped)
    else:
        assert not entry.get("hash_val"), f"{bundle.name}: a hash for weights that do not exist yet"


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_version_is_in_changelog(bundle):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"], f"{bundle.name}: version {meta['version']} has no changelog entry"


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_config_keys_contributing_names(bundle):
    inference = ConfigParser(ConfigParser.load_config_file(str(bundle / "configs" / "inference.yaml")))
    assert not [k for k in INFERENCE_KEYS if k not in inference], f"{bundle.name}: inference keys"
    train = _train_config(bundle)
    wanted = TRAIN_KEYS + (TRAIN_SECTION_KEYS if "train" in train else [])
    wanted += VALIDATE_SECTION_KEYS if "validate" in train else []
    missing = [k for k in wanted if k not in train]
    assert not missing, f"{bundle.name}: train config lacks {missing}"
    handlers = json.dumps(train.get())
    if "ValidationHandler" in handlers:
        assert "val_interval" in train and "@val_interval" in handlers, "ValidationHandler's interval is @val_interval"


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if b.name.endswith("_ssl_pretraining")],
                         ids=[b.name for b in BUNDLES if b.name.endswith("_ssl_pretraining")])
def test_train_dataset_data_is_the_training_data(bundle, tmp_path):
    """Overriding the zoo's ``train#dataset#data`` points the run at other data (here: a missing folder)."""
    for data, expected in ((str(tmp_path / "elsewhere"), "elsewhere does not exist"), (None, "needs --dataset_dir")):
        train = _train_config(bundle)
        train["train#dataset#data"] = data
        with pytest.raises(Exception) as raised:
            train.get_parsed_content("train#dataset")
        assert expected in _messages(raised.value)


def _messages(error):
    """The messages of an error and of the errors it was raised from (MONAI wraps instantiation errors)."""
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__ or error.__context__
    return " | ".join(parts)


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_torchscript_support_is_stated(bundle):
    """ckpt_export scripts network_def: where that fails the README must say so (and why); where it works it must not."""
    torch.manual_seed(0)
    net = network_def(bundle)
    try:
        torch.jit.script(net)
        scripts = True
    except Exception:  # noqa: BLE001 - any compile error means the zoo's ckpt_export fails
        scripts = False
    readme = _readme(bundle)
    if scripts:
        assert NO_TORCHSCRIPT not in readme, f"{bundle.name} scripts, but its README says TorchScript is unsupported"
    else:
        statement = readme[readme.index(NO_TORCHSCRIPT):].split("\n")[0] if NO_TORCHSCRIPT in readme else ""
        assert "exclude_verify_torchscript_list" in statement, \
            f"{bundle.name}: torch.jit.script fails, so docs/README.md must state that TorchScript is not supported"
        assert len(statement) > len(NO_TORCHSCRIPT) + 80, f"{bundle.name}: the statement gives no reason"


def test_shape_check_exclusions_are_stated():
    """verify_net_in_out is excluded only where a README says why (the detection bundle: dict outputs)."""
    stated = {b.name for b in BUNDLES if NO_SHAPE_CHECK in _readme(b)}
    assert stated == {"detection_finetune"}


@pytest.mark.parametrize("bundle", BUNDLES, ids=ids)
def test_initial_weights_load_strictly_into_network_def(bundle):
    """The weights --init_weights writes load into a fresh network_def the way MONAI's ckpt_export loads
    models/model.pt (ignite ``Checkpoint.load_objects``: the whole file, strict), and they are the seed's."""
    torch.manual_seed(0)
    state = initial_state(network_def(bundle))
    torch.manual_seed(1)
    fresh = network_def(bundle)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    Checkpoint.load_objects(to_load={"": fresh}, checkpoint=state)
    after = fresh.state_dict()
    flat = state.get("network", state)
    prefix = "backbone.network." if "network" in state else ""
    assert all(torch.equal(after[prefix + k], v) for k, v in flat.items())
    assert any(not torch.equal(before[k], after[k]) for k in after if after[k].is_floating_point())


def test_copy_with_initial_weights_keeps_shipped_weights(tmp_path):
    """--init_weights fills models/model.pt of a template, never replaces weights a bundle ships."""
    shipped = copy_bundle("models_genesis_ssl_pretraining", tmp_path)
    digest = sha256_file(shipped / MODEL_FILE)
    assert write_initial_weights(shipped) is None and sha256_file(shipped / MODEL_FILE) == digest
    template = copy_bundle("classification_finetune", tmp_path)
    written = write_initial_weights(template)
    assert written == template / MODEL_FILE and written.is_file()
    assert write_initial_weights(template) is None  # a second call keeps the first file
    with pytest.raises(PluginError, match="inference.yaml"):
        network_def(tmp_path)


def test_ckpt_export_of_a_torchscript_bundle(tmp_path):
    """The zoo's TorchScript check on a copy with initial weights: export, then load the .ts file."""
    from monai.bundle import ckpt_export

    bundle = copy_bundle("classification_finetune", tmp_path)
    write_initial_weights(bundle)
    ckpt_export(net_id="network_def", filepath=str(bundle / "models" / "verify_model.ts"),
                ckpt_file=str(bundle / MODEL_FILE), meta_file=str(bundle / "configs" / "metadata.json"),
                config_file=str(bundle / "configs" / "inference.yaml"), bundle_root=str(bundle))
    scripted = torch.jit.load(str(bundle / "models" / "verify_model.ts"))
    reference = network_def(bundle)
    Checkpoint.load_objects(to_load={"": reference}, checkpoint=str(bundle / MODEL_FILE))
    x = torch.randn(1, 1, 32, 32, 32)
    assert torch.allclose(scripted(x), reference.eval()(x), atol=1e-5)
