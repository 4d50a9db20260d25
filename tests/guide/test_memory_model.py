"""The GPU memory model: arithmetic of the parts, the card verdicts, the recommendation's line."""

from __future__ import annotations

import pytest

from monai_ssl_plugin.guide import memory

ENTRY = {"trainable_params": 1_000_000, "frozen_params": 0, "teacher_params": 500_000,
         "optimizer_states_per_param": 2, "saved_bytes_fit": [1e6, 100.0, 0.0], "amp_factor": 0.5}
MODEL = {"demo_ssl_pretraining": {"net": ENTRY}}


def test_static_bytes_count_weights_grads_optimiser_and_teacher() -> None:
    # 1 M trainable x (weight + grad + 2 Adam states) + 0.5 M teacher weights, 4 bytes each
    assert memory.static_bytes(ENTRY) == 4.0 * (1_000_000 * 4 + 500_000)


def test_activations_scale_with_voxels_and_batch_and_halve_under_the_amp_factor() -> None:
    one = memory.activation_bytes(ENTRY, (10, 10, 10), 1, amp=False)
    assert one == pytest.approx(1e6 + 100.0 * 1000)
    assert memory.activation_bytes(ENTRY, (10, 10, 10), 4, amp=False) == pytest.approx(4 * one)
    assert memory.activation_bytes(ENTRY, (10, 10, 10), 1, amp=True) == pytest.approx(0.5 * one)
    quadratic = {**ENTRY, "saved_bytes_fit": [0.0, 0.0, 2.0]}
    assert memory.activation_bytes(quadratic, (10, 10, 10), 1, amp=False) == pytest.approx(2.0 * 1000**2)


def test_a_card_fits_the_model_with_headroom_and_context() -> None:
    est = memory.estimate_memory("demo_ssl_pretraining", "net", (200, 200, 200), 2, model=MODEL)
    assert est.total_gb == pytest.approx(est.static_gb + est.activations_gb)
    assert est.planned_gb == pytest.approx(est.static_gb + memory.ACTIVATION_FACTOR * est.activations_gb
                                           + memory.CONTEXT_GB)
    assert est.fits(est.planned_gb) and not est.fits(est.planned_gb - 0.01)
    assert memory.estimate_memory("demo_ssl_pretraining", "other", (8, 8, 8), 1, model=MODEL) is None


def test_fits_line_names_every_card_and_the_backbone_it_used() -> None:
    big = {"demo_ssl_pretraining": {"net": {**ENTRY, "saved_bytes_fit": [0.0, 2000.0, 0.0]}}}
    # 2000 B/voxel x 160^3 x 2 = 16.4 GB saved in fp32, 8.2 GB in bf16; x 1.5 + 0.6 GB + 0.02 GB static:
    # 25.2 GB planned in fp32 (over 24 GB), 12.9 GB in bf16
    line = memory.fits_line("demo_ssl_pretraining", "net", (160, 160, 160), 2, model=big)
    assert "24 GB with bf16" in line and "40 GB yes" in line and "80 GB yes" in line
    other = memory.fits_line("demo_ssl_pretraining", "resenc", (160, 160, 160), 2, model=big)
    assert "modelled on net" in other
    assert memory.fits_line("demo_ssl_pretraining", "net", (160, 160), 2, model=big) is None  # 2D plan
    assert memory.fits_line("unknown_ssl_pretraining", "net", (8, 8, 8), 1, model=big) is None


def test_packaged_model_covers_the_recommended_bundles() -> None:
    model = memory.load_memory_model()
    if not model:
        pytest.skip("guide/memory.yaml not generated in this checkout")
    for bundle in model:
        for entry in model[bundle].values():
            assert entry["trainable_params"] > 0 and len(entry["saved_bytes_fit"]) == 3
            est = memory.estimate_memory(bundle, entry["backbone"], (96, 96, 96), 2, model=model)
            assert est.activations_gb > 0 and est.static_gb > 0


def test_recommend_prints_the_cards_for_a_modelled_bundle() -> None:
    from monai_ssl_plugin.guide import recommend_command

    model = memory.load_memory_model()
    if "mae_ssl_pretraining" not in model:
        pytest.skip("guide/memory.yaml has no MAE entry in this checkout")
    text = recommend_command("CT", "segmentation", 10, 500, top_k=3)
    (line,) = [ln for ln in text.splitlines() if "GPU memory (model" in ln and "160x160x160" in ln]
    assert all(f"{card} GB" in line for card in memory.CARDS_GB)
