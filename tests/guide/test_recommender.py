"""Pins the review's mapping (Wimalasiri 2026, findings 1-7) as the recommender applies it."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

from monai_ssl_plugin.data.sources import ZSCORE
from monai_ssl_plugin.guide import (
    GuideInputError,
    Recommendation,
    from_json,
    load_measured,
    load_rules,
    recommend,
    recommend_command,
    to_json,
    to_table,
    valid_choices,
)
from monai_ssl_plugin.transfer.normalization import NORMALIZATION_CATEGORIES, normalization_category

BUNDLES = {
    "mae_ssl_pretraining": "generative",
    "mae_vit_ssl_pretraining": "generative",
    "models_genesis_ssl_pretraining": "generative",
    "denoising_ae_ssl_pretraining": "generative",
    "simclr_ssl_pretraining": "contrastive",
    "moco_ssl_pretraining": "contrastive",
    "voco_ssl_pretraining": "contrastive",
    "byol_ssl_pretraining": "non_contrastive",
    "simsiam_ssl_pretraining": "non_contrastive",
    "barlow_twins_ssl_pretraining": "non_contrastive",
    "vicreg_ssl_pretraining": "non_contrastive",
    "dino_ssl_pretraining": "non_contrastive",
    "rotation_ssl_pretraining": "predictive",
    "rubiks_cube_ssl_pretraining": "predictive",
    "relative_position_ssl_pretraining": "predictive",
    "swin_unetr_ssl_pretraining": "hybrid",
    "hybrid_ssl_pretraining": "hybrid",
}
MASKED = {"mae_ssl_pretraining", "mae_vit_ssl_pretraining"}
TASKS = ("classification", "segmentation", "detection", "regression", "reconstruction")
MODALITY_DIMS = [("ct", 3), ("ct", 2), ("mri", 3), ("pet", 3), ("ultrasound", 3), ("ultrasound", 2), ("xray", 2)]
TRAIT_SETS = [(), ("small_lesions",), ("low_compute",), ("multi_sequence",), ("small_lesions", "low_compute")]
BUDGETS = [(5, 20), (20, 480), (100, 5000)]  # (n_labelled, n_unlabelled)
NOWHERE = "/nonexistent/measured.yaml"  # keep tests independent of a benchmark file in the tree


def _all(modality: str, task: str, dims: int, traits=(), n_l: int = 20, n_u: int = 2000) -> Recommendation:
    return recommend(modality, task, n_l, n_u, dims=dims, traits=traits, top_k=len(BUNDLES), measured_path=NOWHERE)


def _grid():
    return itertools.product(MODALITY_DIMS, TRAIT_SETS, BUDGETS)


# ------------------------------------------------------------------------------------------ rules


def test_rules_cover_every_bundle_with_sources():
    rules = load_rules()
    assert {n: b["paradigm"] for n, b in rules["bundles"].items()} == BUNDLES
    sources = rules["sources"]
    for name, b in rules["bundles"].items():
        assert set(b["affinity"]) == set(TASKS), name
        assert all(0.0 <= v <= 1.0 for v in b["affinity"].values()), name
        assert b["compute"] in ("low", "medium", "high"), name
        assert b["data"]["batch_sensitivity"] in ("low", "medium", "high"), name
        assert int(b["data"]["min_unlabelled"]) > 0, name
        assert b["representation"] in ("global", "dense", "mixed"), name
        assert b["default_backbone"] and b["low_compute_backbone"], name
        for d in b["dims"]:
            s = b["settings"][f"{d}d"]
            assert len(s["patch"]) == d and len(s["low_compute"]["patch"]) == d, name
            assert s["basis"], name
        for ref in b.get("affinity_evidence", []) + [p["source"] for p in b.get("published", [])]:
            assert ref in sources, (name, ref)
        for mod in (b.get("modality") or {}).values():
            assert abs(mod.get("adjust", 0.0)) <= rules["scoring"]["modality_adjust_max"]
            assert mod.get("basis", "project") in sources
    for paradigm in rules["paradigms"].values():
        for task in TASKS:
            assert paradigm["task_reasons"][task]
            assert all(ref in sources for ref in paradigm["evidence"][task])
    # the review's seven findings are there, each quoting the seed abstracts
    for i in range(1, 8):
        assert sources[f"review_f{i}"]["seeds"], i


def test_rules_normalization_is_what_nnunet_applies():
    """Each modality names the scheme nnU-Net picks for a channel of that name (CT: CTNormalization,
    the rest: the ZScoreNormalization a plain NIfTI folder gets too), a scheme the consumers compare."""
    schemes = {}
    for name, spec in load_rules()["modalities"].items():
        schemes[name] = spec["normalization"]
        assert get_normalization_scheme(name).__name__ == spec["normalization"], name
        assert normalization_category(spec["normalization"]) in NORMALIZATION_CATEGORIES, name
    assert schemes["ct"] == "CTNormalization"
    assert {v for k, v in schemes.items() if k != "ct"} == {ZSCORE}


# ------------------------------------------------------------------------------ the review's mapping


@pytest.mark.parametrize(("md", "traits", "budget"), list(_grid()))
def test_classification_contrastive_or_hybrid_beats_masked(md, traits, budget):
    """Finding 2 (+4): for classification the best contrastive/hybrid pretext outranks masked modelling."""
    rec = _all(md[0], "classification", md[1], traits, *budget)
    best = {}
    for it in rec.items:
        group = "masked" if it.bundle in MASKED else it.paradigm
        best.setdefault(group, it.score)
    top_global = max(best.get(p, -1.0) for p in ("contrastive", "non_contrastive", "hybrid"))
    assert top_global > best["masked"]
    if "small_lesions" not in traits:  # with subtle lesions a dense restoration pretext may rightly lead
        assert rec.items[0].paradigm in ("contrastive", "non_contrastive", "hybrid")


@pytest.mark.parametrize("task", ["segmentation", "detection"])
@pytest.mark.parametrize(("md", "traits", "budget"), list(_grid()))
def test_dense_tasks_rank_masked_or_reconstruction_first(task, md, traits, budget):
    """Finding 3: masked modelling / reconstruction ranks first for segmentation and detection."""
    rec = _all(md[0], task, md[1], traits, *budget)
    assert rec.items[0].paradigm == "generative", [(i.bundle, i.score) for i in rec.items[:3]]
    # and strictly: no hybrid or other paradigm ties the winner
    assert rec.items[0].score > max(i.score for i in rec.items if i.paradigm != "generative")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(("md", "traits", "budget"), list(_grid()))
def test_hybrid_is_balanced_never_last(task, md, traits, budget):
    """Finding 4: hybrids are balanced, so never the worst choice for any task."""
    rec = _all(md[0], task, md[1], traits, *budget)
    worst = rec.items[-1].score
    for it in rec.items:
        if it.paradigm == "hybrid":
            assert it.score > worst, (it.bundle, it.score, rec.items[-1].bundle)


def test_contrastive_penalised_for_small_lesions():
    """Finding 2: global objectives may under-represent subtle pathology."""
    plain = {i.bundle: i.score for i in _all("ct", "classification", 3).items}
    lesion = {i.bundle: i.score for i in _all("ct", "classification", 3, ("small_lesions",)).items}
    assert lesion["simclr_ssl_pretraining"] < plain["simclr_ssl_pretraining"]
    assert lesion["dino_ssl_pretraining"] < plain["dino_ssl_pretraining"]
    assert lesion["mae_ssl_pretraining"] > plain["mae_ssl_pretraining"]
    rec = _all("ct", "segmentation", 3, ("small_lesions",))
    mae = next(i for i in rec.items if i.bundle == "mae_ssl_pretraining")
    assert any("ForegroundProtection" in n for n in mae.notes)


def test_low_compute_favours_cheap_methods_and_shrinks_settings():
    plain = {i.bundle: i for i in _all("ct", "segmentation", 3).items}
    low = {i.bundle: i for i in _all("ct", "segmentation", 3, ("low_compute",)).items}
    assert low["models_genesis_ssl_pretraining"].score > plain["models_genesis_ssl_pretraining"].score
    assert low["swin_unetr_ssl_pretraining"].score < plain["swin_unetr_ssl_pretraining"].score
    for name in plain:
        a, b = plain[name].settings, low[name].settings
        assert b.batch <= a.batch and all(x <= y for x, y in zip(b.patch, a.patch)), name
        assert b.steps <= a.steps, name
    assert low["mae_ssl_pretraining"].settings.patch == (96, 96, 96)


def test_multi_sequence_adds_multichannel_note():
    rec = recommend("mri", "segmentation", 10, 200, traits=["multi-sequence"], measured_path=NOWHERE)
    assert rec.query.traits == ("multi_sequence",)
    assert any("in_channels" in n for n in rec.notes)


def test_data_hungry_methods_penalised_with_little_data():
    small = {i.bundle: i for i in _all("ct", "classification", 3, n_l=5, n_u=45).items}
    large = {i.bundle: i for i in _all("ct", "classification", 3, n_l=5, n_u=5000).items}
    assert small["dino_ssl_pretraining"].score < large["dino_ssl_pretraining"].score
    assert any("data shortfall" == t.name for t in small["dino_ssl_pretraining"].score_terms)
    # score is exactly the sum of its audited terms
    for it in small.values():
        assert it.score == pytest.approx(sum(t.value for t in it.score_terms), abs=1e-3)


def test_three_d_only_bundles_excluded_for_2d():
    rec = _all("xray", "classification", 2)
    names = {i.bundle for i in rec.items}
    excluded = {e.bundle for e in rec.excluded}
    assert {"rubiks_cube_ssl_pretraining", "voco_ssl_pretraining", "swin_unetr_ssl_pretraining"} <= excluded
    assert not names & excluded
    assert all(len(i.settings.patch) == 2 for i in rec.items)


# ------------------------------------------------------------------------------------- expected gain


def test_fewer_labels_larger_expected_gain():
    """Finding 5: SSL pays off most when labels are scarce."""
    order = {"small": 0, "moderate": 1, "large": 2}
    levels = [recommend("ct", "segmentation", n, 1000, measured_path=NOWHERE).expected_gain for n in (2000, 200, 100, 20, 2)]
    ranks = [order[g] for g in levels]
    assert ranks == sorted(ranks)
    assert levels[0] == "small" and levels[-1] == "large"
    rec = recommend("ct", "segmentation", 10, 990, measured_path=NOWHERE)
    assert rec.label_fraction == pytest.approx(0.01)
    assert "review finding 5" in rec.gain_reason
    assert any(e.source == "review_f5" for e in rec.gain_evidence)


# ------------------------------------------------------------------------------------ items' content


def test_items_carry_reasons_evidence_normalization_settings():
    rec = recommend("ultrasound", "segmentation", 10, 300, top_k=3, measured_path=NOWHERE)
    assert len(rec.items) == 3 and [i.rank for i in rec.items] == [1, 2, 3]
    assert recommend("ct", "segmentation", 10, 300, top_k=1, measured_path=NOWHERE).items[0].normalization == "CTNormalization"
    for it in rec.items:
        assert it.normalization == "ZScoreNormalization"
        assert it.reasons and all(r.endswith(".") for r in it.reasons)
        assert it.evidence and all(e.citation for e in it.evidence)
        assert it.settings.steps > 0 and it.settings.batch > 0 and len(it.settings.patch) == 3
        assert it.estimate.status == "not_measured" and "not measured yet" in it.estimate.text
        assert it.estimate.peak_mem_mb is None and it.estimate.hours_for_steps is None


def test_measured_figures_are_copied_not_invented(tmp_path: Path):
    plan = recommend("ct", "segmentation", 10, 190, measured_path=NOWHERE, top_k=17)
    mae = next(i for i in plan.items if i.bundle == "mae_ssl_pretraining").settings
    measured = tmp_path / "measured.yaml"
    measured.write_text(yaml.safe_dump({"methods": {
        "mae_ssl_pretraining": [
            {"device": "cpu", "patch": list(mae.patch), "batch": mae.batch, "volumes_per_s": 0.5, "peak_mem_mb": 3210.0},
            {"device": "cuda:0", "patch": [64, 64, 64], "batch": 2, "volumes_per_s": 20.0, "peak_mem_mb": 1500.0},
        ],
        "simclr": [{"device": "cpu", "patch": [32, 32, 32], "batch": 4, "volumes_per_s": 8.0, "peak_mem_mb": 400.0}],
    }}))
    assert set(load_measured(measured)) == {"mae_ssl_pretraining", "simclr_ssl_pretraining"}
    rec = recommend("ct", "segmentation", 10, 190, device="cpu", top_k=17, measured_path=measured)
    by = {i.bundle: i.estimate for i in rec.items}
    e = by["mae_ssl_pretraining"]
    assert e.status == "measured" and e.peak_mem_mb == 3210.0 and e.volumes_per_s == 0.5
    assert e.hours_for_steps == pytest.approx(mae.steps * mae.batch / 0.5 / 3600, rel=1e-3)
    other = by["simclr_ssl_pretraining"]
    assert other.status == "measured_other" and other.patch == (32, 32, 32) and "not measured at this setting" in other.text
    assert by["dino_ssl_pretraining"].status == "not_measured"
    cuda = recommend("ct", "segmentation", 10, 190, device="cuda", top_k=17, measured_path=measured)
    e = next(i for i in cuda.items if i.bundle == "mae_ssl_pretraining").estimate
    assert e.status == "measured_other" and e.device == "cuda:0" and e.peak_mem_mb == 1500.0
    gpu2 = recommend("ct", "segmentation", 10, 190, device="mps", top_k=17, measured_path=measured)
    e = next(i for i in gpu2.items if i.bundle == "mae_ssl_pretraining").estimate
    assert e.status == "not_measured" and "cpu" in e.text


# -------------------------------------------------------------------------------------- rendering


def test_json_round_trip():
    rec = recommend("mri", "classification", 12, 800, traits="small_lesions,multi_sequence", measured_path=NOWHERE)
    text = to_json(rec)
    assert json.loads(text)["query"]["modality"] == "mri"
    assert from_json(text) == rec


def test_table_is_aligned_and_complete():
    rec = recommend("ct", "detection", 10, 500, top_k=4, measured_path=NOWHERE)
    table = to_table(rec)
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#"))
    rows = lines[header: header + 5]
    for column, attr in (("paradigm", "paradigm"), ("score", "score"), ("steps", "settings")):
        start = rows[0].index(column)
        for line, it in zip(rows[1:], rec.items):  # every row's cell starts under its header
            value = {"paradigm": it.paradigm, "score": f"{it.score:.3f}", "settings": str(it.settings.steps)}[attr]
            assert line[start: start + len(value)] == value, (column, line)
    for it in rec.items:
        assert it.bundle in table
    assert "review finding 3" in table and "Expected gain" in table
    assert to_table(rec, verbose=False).count("\n") < table.count("\n")


def test_recommend_command_outputs():
    assert "mae_ssl_pretraining" in recommend_command("ct", "seg", 5, 100, measured_path=NOWHERE)
    data = json.loads(recommend_command("us", "cls", 5, 100, dims=2, output="json", measured_path=NOWHERE))
    assert data["query"]["modality"] == "ultrasound" and data["query"]["task"] == "classification"


# ------------------------------------------------------------------------------------ input errors


@pytest.mark.parametrize(
    ("kwargs", "must_name"),
    [
        ({"modality": "fmri"}, ["ct", "mri", "pet", "ultrasound", "xray"]),
        ({"task": "registration"}, ["classification", "segmentation", "detection", "regression", "reconstruction"]),
        ({"traits": ["tiny_gpu_budget"]}, ["small_lesions", "multi_sequence", "low_compute"]),
        ({"dims": 4}, ["2 or 3"]),
        ({"modality": "xray", "dims": 3}, ["dims=2"]),
        ({"n_labelled": -1}, ["non-negative"]),
        ({"n_labelled": 0, "n_unlabelled": 0}, ["nothing to pretrain"]),
        ({"top_k": 0}, ["top_k"]),
    ],
)
def test_invalid_input_raises_one_value_error_naming_choices(kwargs, must_name):
    args = {"modality": "ct", "task": "segmentation", "n_labelled": 10, "n_unlabelled": 100} | kwargs
    with pytest.raises(ValueError) as err:
        recommend(**args, measured_path=NOWHERE)
    assert isinstance(err.value, GuideInputError)
    for word in must_name:
        assert word in str(err.value)


def test_aliases_and_valid_choices():
    rec = recommend("MR", "Seg", 10, 100, traits=("Low-Compute",), measured_path=NOWHERE)
    assert (rec.query.modality, rec.query.task, rec.query.traits) == ("mri", "segmentation", ("low_compute",))
    choices = valid_choices()
    assert set(choices["bundles"]) == set(BUNDLES)
    assert "xray" in choices["modality"]


def test_guide_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, monai_ssl_plugin.guide as g; g.recommend('ct','segmentation',1,9); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
