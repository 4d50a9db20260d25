"""Shared pieces of the contrastive / non-contrastive pretext tests: tiny heads and backbones,
synthetic volumes, a deterministic fitting loop and the EMA check."""

from __future__ import annotations

import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.checkpoint import build_record
from monai_ssl_plugin.data.synthetic import make_synthetic_volumes
from monai_ssl_plugin.pretext import create_pretext

# heads a few dozen units wide: the tests check wiring and maths, not capacity
TINY_HEADS = {
    "simclr": {"hidden_dim": 64},
    "moco": {"hidden_dim": 64, "queue_size": 16},
    "voco": {"hidden_dim": 64, "out_dim": 64},
    "byol": {"hidden_dim": 64, "projection_dim": 32},
    "simsiam": {"hidden_dim": 64, "projection_dim": 64, "predictor_dim": 16},
    "barlow_twins": {"hidden_dim": 64, "projection_dim": 64},
    "vicreg": {"hidden_dim": 64, "projection_dim": 64},
    "dino": {"out_dim": 128, "hidden_dim": 64, "bottleneck_dim": 32, "n_local": 2},
}

# every adapter family with ``embed``, cut down to run in a fraction of a second: name -> (kwargs, patch side)
BACKBONES = {
    "nnunet_plain_tiny": ({}, 16),
    "monai_resnet10": ({"widen_factor": 0.25}, 16),
    "monai_segresnet": ({"init_filters": 8, "blocks_down": (1, 1, 1, 1)}, 16),
    "monai_swinunetr": ({"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 2}, 32),
    "monai_vit_small": ({"img_size": 16, "hidden_size": 48, "mlp_dim": 96, "num_heads": 3}, 16),
    "monai_unetr_small": ({"img_size": 16, "hidden_size": 48, "mlp_dim": 96, "num_heads": 3, "feature_size": 4}, 16),
}


def volumes(batch: int, shape, seed: int = 0) -> torch.Tensor:
    """``batch`` synthetic MRI-like volumes (B, 1, *shape), z-scored as nnU-Net would."""
    x = torch.from_numpy(make_synthetic_volumes(batch, tuple(shape), seed=seed))
    return (x - x.mean()) / x.std()


def patch_shape(method: str, dims: int, side: int = 32) -> list[int]:
    """A patch the method can use: VoCo needs 4 base crops along each grid axis (the last two)."""
    if method == "voco":
        return [side // 2] * (dims - 2) + [2 * side, 2 * side]
    return [side] * dims


def make(method: str, backbone: str = "nnunet_plain_tiny", dims: int = 3, **kwargs):
    torch.manual_seed(0)
    kw, _ = BACKBONES.get(backbone, ({}, 16))
    net = create_backbone(backbone, spatial_dims=dims, **kw)
    return create_pretext(method, backbone=net, **{**TINY_HEADS[method], **kwargs})


def trainable(pretext) -> list[torch.nn.Parameter]:
    return [p for p in pretext.parameters() if p.requires_grad]


def fit(pretext, x: torch.Tensor, steps: int = 10, lr: float = 1e-3, seed: int = 100) -> list[dict[str, float]]:
    """``steps`` Adam steps on one batch with the same views every step (the RNG is re-seeded), so
    the objective is a fixed function and a working gradient path must lower it."""
    opt = torch.optim.Adam(trainable(pretext), lr)
    history = []
    for i in range(steps):
        torch.manual_seed(seed)
        out = pretext({"image": x})
        history.append({k: float(v.detach()) for k, v in out.items()})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if hasattr(pretext, "after_step"):
            pretext.after_step(i + 1)
    return history


def check_forward(pretext, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One step: finite scalar loss with a gradient reaching the backbone; detached embeddings exposed."""
    out = pretext({"image": x})
    loss = out["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    grads = [p.grad for p in pretext.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "no gradient reached the backbone"
    emb = pretext.last_embeddings
    assert emb is not None and emb.ndim == 2 and not emb.requires_grad and torch.isfinite(emb).all()
    return out


def check_ema(pretext, pairs, iteration: int, momentum: float) -> None:
    """After ``after_step(iteration)`` every teacher tensor is ``m * old + (1 - m) * online``."""
    torch.manual_seed(1)
    with torch.no_grad():  # make the online networks differ from the teachers
        for _, online in pairs:
            for p in online.parameters():
                p.add_(0.05 * torch.randn_like(p))
    old = [{k: v.clone() for k, v in teacher.state_dict().items()} for teacher, _ in pairs]
    pretext.after_step(iteration)
    for (teacher, online), before in zip(pairs, old):
        online_state = online.state_dict()
        for name, new in teacher.state_dict().items():
            if not new.is_floating_point():
                continue
            expected = momentum * before[name] + (1 - momentum) * online_state[name]
            torch.testing.assert_close(new, expected, rtol=1e-5, atol=1e-6, msg=name)
        assert not any(p.requires_grad for p in teacher.parameters())


def check_record(pretext) -> dict:
    """The checkpoint record says that only the stem and encoder were pretrained, with the settings."""
    assert pretext.trains_decoder is False
    record = build_record(pretext.backbone, pretext, {"axis_order": "nnunet"}, [32, 32, 32])
    assert record.pretrained_parts == ["stem", "encoder"]
    assert record.pretext == pretext.pretext_name and record.pretext_settings == pretext.settings()
    return record.pretext_settings
