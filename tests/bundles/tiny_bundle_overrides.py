"""Tiny per-bundle overrides shared by the all-bundle tests (bad data, torchrun): a tiny network and
heads for every ``bundles/*_ssl_pretraining`` (the same sizes as the bundles' own end-to-end tests)."""

from __future__ import annotations

TINY = {"backbone": "nnunet_plain_tiny"}
EXTRA: dict[str, dict] = {
    "barlow_twins": {**TINY, "pretext#projection_dim": 64, "pretext#hidden_dim": 64, "batch_size": 4},
    "byol": {**TINY, "pretext#projection_dim": 32, "pretext#hidden_dim": 64},
    "denoising_ae": {**TINY},
    "dino": {**TINY, "pretext#out_dim": 256, "pretext#bottleneck_dim": 32, "pretext#n_local": 2,
             "pretext#hidden_dim": 64},
    "hybrid": {**TINY},
    "mae": {**TINY},
    "mae_vit": {"backbone": "small", "backbone_kwargs": {"num_layers": 2}, "pretext#decoder_hidden_size": 96,
                "pretext#decoder_num_layers": 1, "pretext#decoder_num_heads": 4},
    "moco": {**TINY, "pretext#queue_size": 8, "pretext#hidden_dim": 64},
    "models_genesis": {**TINY, "pretext#n_blocks": 2000},
    "relative_position": {**TINY, "pretext#head_hidden": 64},
    "rotation": {**TINY},
    "rubiks_cube": {**TINY, "pretext#head_hidden": 64, "pretext#num_permutations": 10},
    "simclr": {**TINY, "pretext#hidden_dim": 64},
    "simsiam": {**TINY, "pretext#projection_dim": 64, "pretext#predictor_dim": 16, "pretext#hidden_dim": 64},
    "swin_unetr": {"swin_kwargs": {"feature_size": 12, "depths": [1, 1, 1, 1], "window_size": 4},
                   "pretext#decoder_width": 16, "pretext#projection_dim": 64},
    "vicreg": {**TINY, "pretext#projection_dim": 64, "pretext#hidden_dim": 64},
    "voco": {**TINY, "pretext#out_dim": 64, "patch_size": [16, 64, 64]},
}
