"""channels_last_3d and torch.compile switches: same parameters and keys, same results."""

from __future__ import annotations

import pytest
import torch

from monai_ssl_plugin.backbones import create_backbone
from monai_ssl_plugin.engine.acceleration import channels_last_3d, compile_network
from monai_ssl_plugin.errors import PluginError


def _tiny_backbone():
    torch.manual_seed(0)
    return create_backbone("nnunet_plain_tiny", in_channels=1, spatial_dims=3)


def _step(backbone, x):
    backbone.zero_grad(set_to_none=True)
    out = backbone.decode(backbone.encode(x))
    out.float().pow(2).mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_keeps_keys_and_results(device: str) -> None:
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1)).to(device)
    ref = _tiny_backbone().to(device)
    out_ref, grads_ref = _step(ref, x)
    fast = channels_last_3d(_tiny_backbone().to(device), "true")
    weights = [p for p in fast.parameters() if p.dim() == 5]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    assert list(fast.state_dict()) == list(ref.state_dict())
    for (k, a), b in zip(ref.state_dict().items(), fast.state_dict().values()):
        assert torch.equal(a, b), k
    out, grads = _step(fast, x)
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    for name, g in grads_ref.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-3, atol=1e-5)


def test_switches_off_are_identity_and_2d_networks_refused() -> None:
    net = _tiny_backbone()
    assert channels_last_3d(net, False) is net and compile_network(net, "false") is net
    assert all(p.is_contiguous() for p in net.parameters())
    with pytest.raises(PluginError, match="no 5-D"):
        channels_last_3d(torch.nn.Linear(3, 4), True)


class _TinyAdapter(torch.nn.Module):
    """The adapter interface compile_network relies on: encoder_stages() and network.decoder."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.network = torch.nn.Module()
        self.network.encoder = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU())
        self.network.decoder = torch.nn.Conv3d(4, 1, 1)

    def encoder_stages(self) -> list[torch.nn.Module]:
        return [self.network.encoder]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.decoder(self.network.encoder(x))


def test_compile_keeps_state_dict_keys_and_results() -> None:
    x = torch.randn(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    ref = _TinyAdapter()
    out_ref = ref(x)
    # aot_eager: the real dynamo + AOT-autograd path without C++ code generation in a unit test
    compiled = compile_network(_TinyAdapter(), True, backend="aot_eager")
    assert compiled.network.encoder._compiled_call_impl is not None
    assert compiled.network.decoder._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(ref.state_dict())  # no "_orig_mod." prefixes
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    assert compiled.network.encoder[0].weight.grad is not None


@pytest.mark.e2e
def test_bundle_switch_channels_last_trains_and_saves(tmp_path) -> None:
    """The bundles' ``channels_last`` id reaches the network: a real two-step MAE bundle run."""
    from monai_ssl_plugin.checkpoint import safe_load
    from monai_ssl_plugin.data.synthetic import make_synthetic_dataset
    from monai_ssl_plugin.engine.run import pretrain

    data = make_synthetic_dataset(tmp_path / "raw", 993, "Switch", n_labelled=0, n_unlabelled=2, shape=(32, 32, 32),
                                  spacing=(1.0, 1.0, 1.0))
    final = pretrain("mae_ssl_pretraining", data, tmp_path / "run", backbone="nnunet_plain_tiny", patch_size=[32, 32, 32],
                     quiet=True, device="cpu", channels_last=True,
                     **{"train#epoch_length": 2, "train#trainer#max_epochs": 1, "train#num_workers": 0})
    state = safe_load(final)
    assert final.is_file() and state
