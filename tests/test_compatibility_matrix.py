"""The pretext × backbone compatibility matrix, produced by running it: every pretext on every small backbone, 2D and 3D.

Each cell builds ``create_pretext(name, backbone=create_backbone(...))``, runs one forward + backward
on a tiny batch, and records

- ``ok``: a finite loss whose backward reached the backbone;
- ``refused``: the pretext (or the backbone) raised ``PluginError`` / ``ValueError`` -- the one-line
  reason goes into the table;
- anything else is an unexpected error and fails the test.

The run then renders ``docs/compatibility.md`` and asserts the committed file equals it;
``UPDATE_COMPAT_DOC=1 pytest tests/test_compatibility_matrix.py`` rewrites the file instead.

What is exercised is the *interface* between pretext and backbone, not the published recipes: heads
are made narrow (``HEAD_KWARGS``) so that the whole matrix runs in well under a minute on one CPU
thread, and every cell gets the smallest input its backbone and pretext accept (:func:`patch_side`).
Large presets (``nnunet_resenc_l``, ``monai_resnet50``, ViT-B ``monai_vit`` / ``monai_unetr``)
share their adapter class with a small preset here; ``nnunet_from_plans`` needs a plans file.
``composed`` is a composition of the other pretexts and is not a cell of its own.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.pretext import create_pretext, list_pretexts

DOC = Path(__file__).resolve().parents[1] / "docs" / "compatibility.md"
DIMS = (2, 3)
# smallest useful ViT / UNETR input: 2 patches of 16 per axis (one token leaves 1-voxel maps InstanceNorm rejects)
VIT_IMG = 32
SWIN_SIDE = 64  # SwinUNETR: multiple of 32 with more than one voxel at the /32 bottleneck

# backbone preset -> constructor kwargs (tiny / small presets only)
BACKBONES: dict[str, dict] = {
    "nnunet_plain_tiny": {},
    "monai_resnet10": {},
    "monai_segresnet": {},
    "monai_swinunetr": {"feature_size": 12},
    "monai_unetr_small": {"img_size": VIT_IMG},
    "monai_vit_small": {"img_size": VIT_IMG},
    "monai_unet": {"channels": [8, 16, 32, 64], "strides": [2, 2, 2]},
    "monai_dynunet": {"kernel_size": [3, 3, 3, 3], "strides": [1, 2, 2, 2], "upsample_kernel_size": [2, 2, 2],
                      "filters": [8, 16, 32, 64]},
    "monai_densenet121": {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]},
}
# narrow heads: the matrix tests the pretext <-> backbone interface, not the published head widths
HEAD_KWARGS: dict[str, dict] = {
    "simclr": {"projection_dim": 16, "hidden_dim": 32},
    "moco": {"queue_size": 16, "projection_dim": 16, "hidden_dim": 32},
    "voco": {"hidden_dim": 32, "out_dim": 32},
    "barlow_twins": {"projection_dim": 32, "hidden_dim": 32},
    "byol": {"projection_dim": 16, "hidden_dim": 32},
    "simsiam": {"projection_dim": 32, "hidden_dim": 32, "predictor_dim": 16},
    "vicreg": {"projection_dim": 32, "hidden_dim": 32},
    "dino": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, "n_local": 2},
    "rotation": {"head_hidden": 32},
    "relative_position": {"head_hidden": 32},
    "rubiks_cube": {"head_hidden": 32, "num_permutations": 10},  # 2D has only 4! = 24 permutations
    "models_genesis": {"decoder_width": 16},
    "denoising_ae": {"decoder_width": 16},
    "mae_vit": {"decoder_hidden_size": 48, "decoder_mlp_dim": 64, "decoder_num_layers": 1, "decoder_num_heads": 3},
    "swin_unetr": {"projection_dim": 32, "decoder_width": 16},
}
# smallest batch each pretext is defined for (Barlow Twins standardises over the batch: >= 3)
BATCH = {"barlow_twins": 3}
# cells not run, with the reason (cost, not compatibility): 3D SwinUNETR runs one pretext only
NOT_RUN = {("monai_swinunetr", 3): ("swin_unetr", "3D SwinUNETR needs 64^3 inputs: one 3D case is run (swin_unetr); "
                                                  "the 2D column runs the same adapter code")}

PRETEXTS = [p for p in list_pretexts() if p != "composed"]
CELLS = [(p, b, d) for b in BACKBONES for d in DIMS for p in PRETEXTS]
_RESULTS: dict[tuple[str, str, int], tuple[str, str]] = {}


def patch_side(pretext: str, backbone: str, dims: int) -> int:
    """Smallest patch side (cubic) a cell needs: the backbone's smallest input ``u`` for one view /
    crop / puzzle piece, scaled up for the pretexts that cut several pieces out of one patch."""
    if backbone in ("monai_unetr_small", "monai_vit_small"):
        u = VIT_IMG
    elif backbone == "monai_swinunetr":
        u = SWIN_SIDE
    else:
        u = 32
    if pretext == "relative_position":  # 3 x 3 grid, default gap 4 and jitter 2
        return 3 * u + 2 * 4 + 2 * 2
    if pretext == "rubiks_cube":  # 2 x 2 cubes, default gap 4
        return 2 * u + 4
    if backbone in ("monai_unetr_small", "monai_vit_small") and pretext in (
            "simclr", "moco", "voco", "barlow_twins", "byol", "simsiam", "vicreg", "dino"):
        return 2 * u  # views / crops are cut from the patch, then fit to img_size
    if backbone == "monai_swinunetr" and pretext in (
            "simclr", "moco", "barlow_twins", "byol", "simsiam", "vicreg", "dino"):
        return math.ceil(u * 4 / 3)  # default views are 3/4 of the patch, rounded down to multiples of 32
    return u


def _reason(err: Exception) -> str:
    text = err.problem if isinstance(err, PluginError) else str(err)
    return " ".join(text.split()).replace("|", "/")


def run_cell(pretext: str, backbone: str, dims: int) -> tuple[str, str]:
    """``("ok", "")``, ``("refused", reason)`` or ``("not run", reason)``; unexpected errors propagate."""
    key = (pretext, backbone, dims)
    if key in _RESULTS:
        return _RESULTS[key]
    skip = NOT_RUN.get((backbone, dims))
    if skip is not None and pretext != skip[0]:
        return _RESULTS.setdefault(key, ("not run", skip[1]))
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bb = create_backbone(backbone, spatial_dims=dims, **BACKBONES[backbone])
        model = create_pretext(pretext, backbone=bb, **HEAD_KWARGS.get(pretext, {}))
        model.train()
        side = patch_side(pretext, backbone, dims)
        x = torch.randn(BATCH.get(pretext, 2), 1, *([side] * dims))
        out = model({"image": x})
        loss = out["loss"]
        assert loss.dim() == 0 and torch.isfinite(loss), f"{key}: loss {loss}"
        loss.backward()
        grads = [p.grad for p in bb.network.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"{key}: no gradient reached the backbone"
        result = ("ok", "")
    except (PluginError, ValueError) as err:
        result = ("refused", _reason(err))
    finally:
        torch.set_num_threads(threads)
    _RESULTS[key] = result
    return result


def render(results: dict[tuple[str, str, int], tuple[str, str]]) -> str:
    paradigms = list_pretexts()
    cols = [(b, d) for b in BACKBONES for d in DIMS]
    reasons: list[str] = []

    def mark(status: str, reason: str) -> str:
        if status == "ok":
            return "✓"
        if reason not in reasons:
            reasons.append(reason)
        n = reasons.index(reason) + 1
        return f"✗ [{n}]" if status == "refused" else f"– [{n}]"

    lines = [
        "# Pretext × backbone compatibility",
        "",
        "<!-- GENERATED by `pytest tests/test_compatibility_matrix.py` -- do not edit by hand. -->",
        "<!-- Rewrite with `UPDATE_COMPAT_DOC=1 pytest tests/test_compatibility_matrix.py`. -->",
        "",
        "Generated by `pytest tests/test_compatibility_matrix.py`; do not edit by hand (the test fails when this",
        "file differs from what it produces; `UPDATE_COMPAT_DOC=1` rewrites it). Every cell builds",
        "`create_pretext(<row>, backbone=create_backbone(<column>, spatial_dims=<dims>))` and runs one forward",
        "and backward pass on random inputs of the smallest size the cell accepts (batch 2; Barlow Twins 3).",
        "Heads are narrowed for speed (`HEAD_KWARGS` in the test); the backbones are the small presets",
        "(`monai_swinunetr` with `feature_size=12`, ViT/UNETR with `img_size=32`). The large presets",
        "(`nnunet_resenc_l`, `monai_resnet18/50`, `monai_vit`, `monai_unetr`) use the same adapter classes.",
        "`composed` (user-composed hybrids) combines the rows below over one backbone.",
        "",
        "✓ trains (finite loss, gradients reach the backbone) · ✗ [n] refused with the one-line reason [n] ·"
        " – [n] not run, reason [n]",
        "",
        "| pretext | paradigm | " + " | ".join(f"{b} {d}D" for b, d in cols) + " |",
        "| --- | --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for p in PRETEXTS:
        cells = [mark(*results[(p, b, d)]) for b, d in cols]
        lines.append(f"| `{p}` | {paradigms[p]} | " + " | ".join(cells) + " |")
    lines += ["", "Reasons:", ""]
    lines += [f"{i}. {r}" for i, r in enumerate(reasons, 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("pretext,backbone,dims", CELLS, ids=[f"{p}-{b}-{d}d" for p, b, d in CELLS])
def test_cell(pretext, backbone, dims):
    status, reason = run_cell(pretext, backbone, dims)
    assert status in ("ok", "refused", "not run")
    if status == "refused":
        assert reason and "\n" not in reason, "a refusal must give a one-line reason"


def test_compatibility_doc_is_generated():
    """Runs the cells the parametrised test did not (e.g. under ``-k``), then compares or rewrites the doc."""
    results = {cell: run_cell(*cell) for cell in CELLS}
    text = render(results)
    if os.environ.get("UPDATE_COMPAT_DOC") == "1":
        DOC.write_text(text, encoding="utf-8")
    assert DOC.is_file(), f"{DOC} is missing: run UPDATE_COMPAT_DOC=1 pytest {Path(__file__).name}"
    assert DOC.read_text(encoding="utf-8") == text, (
        f"{DOC} differs from the matrix this run produced: run UPDATE_COMPAT_DOC=1 pytest tests/{Path(__file__).name}")


def test_every_pretext_trains_somewhere_in_2d_and_3d():
    """Every method works in 2D as well as 3D, on at least one backbone."""
    for p in PRETEXTS:
        for d in DIMS:
            assert any(run_cell(p, b, d)[0] == "ok" for b in BACKBONES), f"{p} trains on no backbone in {d}D"
