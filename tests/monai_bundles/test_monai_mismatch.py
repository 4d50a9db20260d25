"""Every wrong checkpoint fails before training, with one line that says what and how to fix it."""

from __future__ import annotations

import pytest
import torch
from monai_ssl_helpers import record, resnet, retinanet, save_checkpoint, snapshot, swinunetr, unetr

from monai_ssl_plugin.checkpoint import atomic_save
from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.monai_bundles import load_pretrained


def _refused(net, source, match, **kw):
    before = snapshot(net)
    with pytest.raises(PluginError, match=match) as e:
        load_pretrained(net, source, log=None, **kw)
    msg = str(e.value)
    assert "\n" not in msg and "Fix:" in msg, msg
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()), "a refused load changed weights"
    return msg


def test_wrong_backbone_family(tmp_path):
    ckpt = save_checkpoint(tmp_path / "swin.pt", swinunetr(seed=1), "monai.SwinUNETR")
    msg = _refused(retinanet(seed=2), ckpt, r"holds a monai.SwinUNETR backbone, which cannot initialise "
                                             r"feature_extractor.body of RetinaNet")
    assert "monai.ResNet" in msg
    # a CNN checkpoint into a transformer
    _refused(unetr(seed=2), save_checkpoint(tmp_path / "r.pt", resnet(seed=1), "monai.ResNet"),
             "cannot initialise vit of UNETR")


def test_wrong_channel_count(tmp_path):
    ckpt = save_checkpoint(tmp_path / "c2.pt", resnet(in_channels=2, seed=1), "monai.ResNet", in_channels=2)
    _refused(retinanet(seed=2), ckpt, r"pretrained on 2 input channel\(s\), the target feature_extractor.body takes 1")
    # the record matches the network but the pipeline feeds another number of channels
    ckpt1 = save_checkpoint(tmp_path / "c1.pt", resnet(seed=1), "monai.ResNet")
    _refused(resnet(seed=2), ckpt1, r"this pipeline feeds 3", in_channels=3)


def test_wrong_axis_order_anisotropic_kernels(tmp_path):
    # nnU-Net order (z, y, x): a stem kernel thin along z
    ssl = resnet(conv1_t_size=[3, 7, 7], conv1_t_stride=[1, 2, 2], seed=1)
    ckpt = save_checkpoint(tmp_path / "nn.pt", ssl, "monai.ResNet", axis_order="nnunet")
    msg = _refused(resnet(conv1_t_size=[7, 7, 3], conv1_t_stride=[2, 2, 1], seed=2), ckpt,
                   r"pretrained on \(z, y, x\) volumes but this pipeline feeds \(x, y, z\); anisotropic kernels such as "
                   r"conv1.weight 3x7x7", on_axis_mismatch="refuse")
    assert "on_axis_mismatch='permute'" in msg
    # "ignore" is never allowed with anisotropic kernels
    _refused(resnet(conv1_t_size=[7, 7, 3], seed=2), ckpt, "anisotropic", on_axis_mismatch="ignore")


def test_wrong_axis_order_isotropic_kernels(tmp_path, capsys):
    ssl = resnet(seed=1)
    ckpt = save_checkpoint(tmp_path / "nn.pt", ssl, "monai.ResNet", axis_order="nnunet")
    _refused(resnet(seed=2), ckpt, r"every learned filter would see transposed anatomy", on_axis_mismatch="refuse")
    net = resnet(seed=2)
    load_pretrained(net, ckpt, on_axis_mismatch="ignore")  # explicit opt-in, with a warning
    assert "WARNING" in capsys.readouterr().out and torch.equal(net.layer1[0].conv1.weight, ssl.layer1[0].conv1.weight)


def test_default_transposes_exactly_and_refuses_an_unknown_swin_merging(tmp_path):
    ssl = swinunetr(seed=1)
    ckpt = save_checkpoint(tmp_path / "s.pt", ssl, "monai.SwinUNETR", axis_order="nnunet")
    net = swinunetr(seed=2)
    assert load_pretrained(net, ckpt, log=None).loaded_fraction == 1.0  # default: exact transposition
    table = "swinViT.layers1.0.blocks.0.attn.relative_position_bias_table"
    assert torch.equal(net.state_dict()[table], ssl.state_dict()[table].reshape(13, 13, 13, -1)
                       .permute(2, 1, 0, 3).reshape(13 ** 3, -1))
    odd = save_checkpoint(tmp_path / "o.pt", ssl, "monai.SwinUNETR", axis_order="nnunet",
                          backbone_kwargs={"downsample": "custom"})
    _refused(swinunetr(seed=2), odd, "has no known neighbour order", on_axis_mismatch="permute")


def test_permute_refuses_a_target_that_is_not_the_transposed_architecture(tmp_path):
    ssl = resnet(conv1_t_size=[3, 7, 7], seed=1)
    ckpt = save_checkpoint(tmp_path / "nn.pt", ssl, "monai.ResNet", axis_order="nnunet")
    _refused(resnet(conv1_t_size=[3, 7, 7], seed=2), ckpt, r"After transposing to monai order, conv1.weight is "
                                                           r"\(8, 1, 7, 7, 3\)", on_axis_mismatch="permute")


def test_unrelated_keys(tmp_path):
    path = atomic_save({"network": {"encoder.blocks.0.weight": torch.zeros(3, 3), "decoder.out.bias": torch.zeros(2)},
                        "record": record("monai.ResNet")}, tmp_path / "other.pt")
    _refused(resnet(seed=2), path, "no key of the checkpoint matches the network")
    bare = atomic_save({"foo.weight": torch.zeros(4)}, tmp_path / "bare.pt")
    _refused(retinanet(seed=2), bare, "no key of the checkpoint matches", backbone_family="monai.ResNet")


def test_too_little_loaded(tmp_path):
    from monai.networks.nets import ResNet

    wider = ResNet("basic", [1, 1, 1, 1], [8, 16, 32, 128], spatial_dims=3, n_input_channels=1, num_classes=2)
    ckpt = save_checkpoint(tmp_path / "w.pt", wider, "monai.ResNet")  # layer4 differs: only 26% of the values load
    _refused(resnet(seed=2), ckpt, r"need 90.0%.*first mismatching layer layer4")
    assert load_pretrained(resnet(seed=2), ckpt, min_fraction=0.05, log=None).skipped_shape


def test_normalization_mismatch(tmp_path, capsys):
    ssl = resnet(seed=1)
    ckpt = save_checkpoint(tmp_path / "ct.pt", ssl, "monai.ResNet", normalization=["CTNormalization"])
    _refused(resnet(seed=2), ckpt, r"normalised as \['CTNormalization'\] \(ct\), this pipeline uses "
                                   r"\['NormalizeIntensityd'\] \(zscore\)", normalization="NormalizeIntensityd",
             on_normalization_mismatch="refuse")
    net = resnet(seed=2)  # the default loads, and says what differs and how to match by construction
    load_pretrained(net, ckpt, normalization="NormalizeIntensityd")
    out = capsys.readouterr().out
    assert "WARNING" in out and "(ct), this pipeline uses" in out and "--read_like" in out
    assert torch.equal(net.layer1[0].conv1.weight, ssl.layer1[0].conv1.weight)
    load_pretrained(resnet(seed=2), ckpt, normalization="any", log=None)
    ok = save_checkpoint(tmp_path / "z.pt", resnet(seed=1), "monai.ResNet")
    load_pretrained(resnet(seed=2), ok, normalization="NormalizeIntensityd", log=None)  # same transform, other name


def test_statement_contradicting_the_record(tmp_path):
    ckpt = save_checkpoint(tmp_path / "r.pt", resnet(seed=1), "monai.ResNet")
    _refused(resnet(seed=2), ckpt, r"records backbone 'monai.ResNet', but 'monai.DenseNet121' was stated",
             backbone_family="monai.DenseNet121")


def test_missing_and_corrupt_files(tmp_path):
    _refused(resnet(seed=2), tmp_path / "nope.pt", "does not exist")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    _refused(resnet(seed=2), tmp_path / "bad.pt", "Cannot load")
    (tmp_path / "empty_bundle").mkdir()
    _refused(resnet(seed=2), tmp_path / "empty_bundle", "without models/model.pt")
