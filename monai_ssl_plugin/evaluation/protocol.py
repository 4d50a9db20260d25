"""The evaluation protocol: a YAML file validated into dataclasses, with one-line errors.

A protocol names the data (the demo cohort or an nnU-Net raw dataset), the pretexts (pretraining
bundles + overrides), the downstream tasks, label budgets, seeds, routes and probes. Pretrained and
from-scratch arms share the budget, the split, the architecture and the fine-tuning settings; they
differ only in their initialisation. See ``docs/evaluation.md`` for an annotated example.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from monai_ssl_plugin.bundles import bundle_dir
from monai_ssl_plugin.errors import PluginError

TASKS = ("tissue_segmentation", "atrophy_classification", "lesion_segmentation")
ROUTES = ("monai", "nnunet")
SEGMENTATION_TASKS = ("tissue_segmentation", "lesion_segmentation")
NNUNET_SCHEDULES = ("warmup_poly", "sawtooth")


@dataclass
class DemoCohort:
    """Arguments of ``monai_ssl_plugin.data.demo_cohort.make_demo_dataset`` (imagesTs is not used:
    the protocol draws its own held-out test set from the labelled cases)."""

    n_labelled: int = 32
    n_unlabelled: int = 32
    spacing: float = 3.0
    seed: int = 0
    atrophy_fraction: float = 0.5
    lesion_fraction: float = 0.5
    contrasts: list[str] = field(default_factory=lambda: ["T1"])  # T1 | T2 | FLAIR, one drawn per subject
    thick_slice_fraction: float = 0.0


@dataclass
class DatasetSpec:
    """``demo`` (generate) or ``raw`` (an existing nnU-Net raw dataset folder), and the test split."""

    dataset_id: int = 511
    name: str = "EvalBrain"
    demo: DemoCohort | None = None
    raw: str | None = None
    n_test: int = 8  # fixed held-out test cases, drawn once per protocol with split_seed
    split_seed: int = 0
    patient_key: str | None = None  # attributes.json field grouping several cases of one patient


@dataclass
class PretextSpec:
    name: str  # label used in tables, e.g. "mae"
    bundle: str  # a shipped bundle (monai-ssl list) or a bundle folder
    paradigm: str = ""  # contrastive | non_contrastive | generative | predictive | hybrid (for the report)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainingSpec:
    """Shared by every pretext: steps and batch; plus the online probe cadence (0: off)."""

    iterations: int = 200
    batch_size: int = 2
    online_probe_every: int = 50
    online_probe_cases: int = 16


@dataclass
class MonaiRouteSpec:
    iterations: int = 150  # optimiser steps per fine-tuning cell
    batch_size: int = 2
    lr: float = 1e-3
    classification_iterations: int = 100


@dataclass
class NnUNetRouteSpec:
    tasks: list[str] = field(default_factory=lambda: ["tissue_segmentation"])
    pretexts: list[str] | None = None  # None: every pretext of the protocol (scratch always runs)
    epochs: int = 2
    iterations: int = 25  # per epoch
    lr: float = 1e-2
    seeds: list[int] | None = None  # None: the protocol's seeds
    n_val: int = 2  # nnU-Net needs a validation set: the first n_val test cases (no model selection)
    schedule: str = "warmup_poly"  # pretrained arm: warmup_poly (nnUNetTrainerSSL) or sawtooth (decoder first)
    warmup_epochs: int | None = None  # None: the trainer's own (shortened with the run); both arms
    decoder_epochs: int | None = None  # sawtooth: the decoder-only tooth (None: scaled from the recipe)


@dataclass
class ProbeSpec:
    linear: bool = True
    knn: bool = True
    knn_k: int = 5
    segmentation_head: bool = True
    head_iterations: int = 100


@dataclass
class Protocol:
    name: str
    dataset: DatasetSpec
    pretexts: list[PretextSpec]
    tasks: list[str]
    budgets: list[float]  # ints: case counts; floats in (0, 1]: fractions of the training pool
    seeds: list[int]
    routes: list[str]
    backbone: str = "nnunet_plain_tiny"
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])
    device: str = "cpu"
    pretraining: PretrainingSpec = field(default_factory=PretrainingSpec)
    monai: MonaiRouteSpec = field(default_factory=MonaiRouteSpec)
    nnunet: NnUNetRouteSpec = field(default_factory=NnUNetRouteSpec)
    probes: ProbeSpec = field(default_factory=ProbeSpec)
    source: str = ""  # the file it was read from

    def budget_counts(self, pool_size: int) -> list[int]:
        """Budgets as case counts for a training pool of ``pool_size`` cases (sorted, unique)."""
        counts = []
        for b in self.budgets:
            n = int(b) if float(b).is_integer() and b >= 1 else max(1, round(float(b) * pool_size))
            if n > pool_size:
                raise PluginError(f"Label budget {b} asks for {n} cases but the training pool has {pool_size}.",
                                  "Lower the budget, lower dataset.n_test, or generate more labelled cases.")
            counts.append(n)
        return sorted(set(counts))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)`` refusing unknown keys and wrong types, naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PluginError(f"{where} must be a mapping, got {type(data).__name__}.", f"Write {where} as 'key: value' lines.")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise PluginError(f"{where} has unknown key(s) {', '.join(unknown)}.", f"Allowed: {', '.join(names)}.")
    kwargs = {}
    for key, value in data.items():
        sub = {"demo": DemoCohort, "dataset": DatasetSpec, "pretraining": PretrainingSpec, "monai": MonaiRouteSpec,
               "nnunet": NnUNetRouteSpec, "probes": ProbeSpec}.get(key)
        kwargs[key] = _build(sub, value, f"{where}.{key}") if sub is not None and value is not None else value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise PluginError(f"{where}: {e}.", "Add the missing keys (see docs/evaluation.md).") from None


def _check_number(value: Any, where: str, lo: float, integer: bool = True) -> None:
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool) and value >= lo
    if not ok:
        kind = "an integer" if integer else "a number"
        raise PluginError(f"{where} = {value!r} is not {kind} >= {lo}.", f"Set {where} to {kind} >= {lo}.")


def _validate_nnunet_schedule(nn: NnUNetRouteSpec) -> None:
    if nn.schedule not in NNUNET_SCHEDULES:
        raise PluginError(f"nnunet.schedule {nn.schedule!r} is not a schedule.", f"Use one of: {', '.join(NNUNET_SCHEDULES)}.")
    for where, value in (("nnunet.warmup_epochs", nn.warmup_epochs), ("nnunet.decoder_epochs", nn.decoder_epochs)):
        if value is not None:
            _check_number(value, where, 0)
    if nn.decoder_epochs is not None and nn.schedule != "sawtooth":
        raise PluginError("nnunet.decoder_epochs is set but nnunet.schedule is not sawtooth.",
                          "Set nnunet.schedule: sawtooth, or remove nnunet.decoder_epochs.")


def validate(p: Protocol) -> Protocol:
    """Check values the dataclasses cannot: names, ranges, budgets, bundles."""
    ds = p.dataset
    if (ds.demo is None) == (ds.raw is None):
        raise PluginError("dataset needs exactly one of 'demo' (generate the demo cohort) and 'raw' (a folder).",
                          "Write dataset.demo: {n_labelled: 32, ...} or dataset.raw: /path/DatasetXXX_Name.")
    if ds.raw is not None and not (Path(ds.raw).expanduser() / "dataset.json").is_file():
        raise PluginError(f"dataset.raw {ds.raw} is not an nnU-Net raw dataset (no dataset.json).",
                          "Point dataset.raw to a DatasetXXX_Name folder with dataset.json, imagesTr and labelsTr.")
    _check_number(ds.n_test, "dataset.n_test", 1)
    if not p.pretexts:
        raise PluginError("The protocol lists no pretexts.", "Add pretexts: [{name: mae, bundle: mae_ssl_pretraining}].")
    names = [x.name for x in p.pretexts]
    if len(set(names)) != len(names) or "scratch" in names:
        raise PluginError(f"Pretext names {names} repeat or use the reserved name 'scratch'.",
                          "Give every pretext a unique name.")
    for x in p.pretexts:
        bundle_dir(x.bundle)  # one-line error naming the bundles that exist
    for t in p.tasks:
        if t not in TASKS:
            raise PluginError(f"Unknown task {t!r}.", f"Use some of: {', '.join(TASKS)}.")
    for r in p.routes:
        if r not in ROUTES:
            raise PluginError(f"Unknown route {r!r}.", f"Use some of: {', '.join(ROUTES)}.")
    for t in p.nnunet.tasks:
        if t not in SEGMENTATION_TASKS:
            raise PluginError(f"nnunet.tasks has {t!r}; the nnU-Net route does segmentation only.",
                              f"Use some of: {', '.join(SEGMENTATION_TASKS)}.")
    unknown = sorted(set(p.nnunet.pretexts or []) - set(names))
    if unknown:
        raise PluginError(f"nnunet.pretexts names {', '.join(unknown)}, which the protocol does not list.",
                          f"Use some of: {', '.join(names)}.")
    if not p.tasks or not p.budgets or not p.seeds or not p.routes:
        raise PluginError("tasks, budgets, seeds and routes must each list at least one value.",
                          "e.g. budgets: [4, 12], seeds: [0, 1], routes: [monai].")
    for b in p.budgets:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or b <= 0 or (isinstance(b, float) and b > 1
                                                                                 and not b.is_integer()):
            raise PluginError(f"Label budget {b!r} is neither a case count (integer >= 1) nor a fraction in (0, 1].",
                              "Write budgets as counts [4, 12] or fractions [0.1, 0.5].")
    for s in p.seeds:
        _check_number(s, "seeds[]", 0)
    if len(p.patch_size) != 3 or any(not isinstance(v, int) or v < 8 for v in p.patch_size):
        raise PluginError(f"patch_size {p.patch_size} is not three integers >= 8.", "Use e.g. patch_size: [32, 32, 32].")
    for where, value in (("pretraining.iterations", p.pretraining.iterations), ("pretraining.batch_size",
                         p.pretraining.batch_size), ("monai.iterations", p.monai.iterations),
                         ("monai.classification_iterations", p.monai.classification_iterations),
                         ("nnunet.epochs", p.nnunet.epochs), ("nnunet.iterations", p.nnunet.iterations)):
        _check_number(value, where, 1)
    _check_number(p.pretraining.online_probe_every, "pretraining.online_probe_every", 0)
    _validate_nnunet_schedule(p.nnunet)
    _check_number(p.monai.lr, "monai.lr", 0, integer=False)
    return p


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol YAML file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PluginError(f"Protocol file {path} does not exist.", "Pass --config PATH to a protocol YAML "
                          "(e.g. benchmarks/task_alignment.yaml).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PluginError(f"{path} is not valid YAML ({str(e).splitlines()[0]}).", "Fix the YAML syntax.") from None
    if not isinstance(data, dict):
        raise PluginError(f"{path} does not hold a mapping.", "Start the file with 'name: ...' and the other keys.")
    pretexts = data.pop("pretexts", None)
    if not isinstance(pretexts, list):
        raise PluginError(f"{path}: 'pretexts' must be a list.", "Write pretexts: [{name: mae, bundle: mae_ssl_pretraining}].")
    protocol = _build(Protocol, {**data, "pretexts": []}, "protocol")
    protocol.pretexts = [_build(PretextSpec, x, f"pretexts[{i}]") for i, x in enumerate(pretexts)]
    protocol.source = str(path.resolve())
    return validate(protocol)
