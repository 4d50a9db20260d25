"""nnssl's Primus plans read into the plugin's record (nnU-Net's Primus at the pretraining patch), and back."""

from __future__ import annotations

from pathlib import Path

import pytest

from monai_ssl_plugin.errors import PluginError
from monai_ssl_plugin.transfer.formats import read_weights
from monai_ssl_plugin.transfer.nnssl import nnssl_adaptation_plan, record_from_adaptation_plan
from monai_ssl_plugin.transfer.networks import record_network

from nnunet_helpers import write_nnssl_primus


def test_explicit_primus_plan_becomes_a_primus_record_whose_network_has_the_files_keys(tmp_path: Path):
    path, state = write_nnssl_primus(tmp_path / "checkpoint_final.pth")
    weights = read_weights(path, require_record=True)
    rec = weights.record
    assert rec.backbone_family == "nnunet.Primus" and rec.axis_order == "nnunet" and rec.patch_size == [32, 32, 32]
    assert rec.backbone_kwargs["arch_kwargs"] == {"embed_dim": 48, "patch_embed_size": [8, 8, 8], "eva_depth": 2,
                                                  "eva_numheads": 2, "input_shape": [32, 32, 32], "init_values": 0.1,
                                                  "scale_attn_inner": True}
    assert rec.key_prefixes == {"stem": "down_projection", "encoder": "eva", "decoder": "up_projection",
                                "in_proj": ["down_projection.proj"], "lpe": "eva.pos_embed"}
    assert rec.pretrained_parts == ["stem", "encoder"]
    net = record_network(rec).state_dict()  # nnU-Net's builder, meta device: same keys and shapes as the file
    assert {k: tuple(v.shape) for k, v in net.items()} == {k: tuple(v.shape) for k, v in state.items()}
    plan = nnssl_adaptation_plan(rec)  # written back: nnssl's prefixes, the learned position embedding named
    assert (plan["key_to_stem"], plan["key_to_encoder"], plan["key_to_lpe"]) == ("down_projection", "eva",
                                                                                  "eva.pos_embed")
    assert plan["architecture_plans"]["arch_class_name"] == "Primus"


def _plan(arch_class_name: str, arch_kwargs: dict | None, patch: list[int]) -> dict:
    return {"architecture_plans": {"arch_class_name": arch_class_name, "arch_kwargs": arch_kwargs},
            "pretrain_plan": {"configurations": {"onemmiso": {"patch_size": patch}}},
            "pretrain_num_input_channels": 1, "key_to_stem": "down_projection", "key_to_encoder": "eva"}


@pytest.mark.parametrize("name,dims", [("PrimusS", (396, 12, 6)), ("PrimusB", (792, 12, 12)),
                                       ("PrimusM", (864, 16, 12)), ("PrimusL", (1056, 24, 16))])
def test_nnssl_primus_presets(name, dims):
    kw = record_from_adaptation_plan(_plan(name, None, [160, 160, 160])).backbone_kwargs["arch_kwargs"]
    assert (kw["embed_dim"], kw["eva_depth"], kw["eva_numheads"]) == dims
    assert kw["patch_embed_size"] == [8, 8, 8] and kw["input_shape"] == [160, 160, 160]
    assert (kw["init_values"], kw["scale_attn_inner"]) == (0.1, True)


def test_primus_plans_that_cannot_build_the_network_are_refused():
    with pytest.raises(PluginError, match="Primus arch_kwargs lack eva_numheads"):
        record_from_adaptation_plan(_plan("Primus", {"embed_dim": 48, "encoder_eva_depth": 2}, [32, 32, 32]))
    with pytest.raises(PluginError, match="Primus without arch_kwargs"):
        record_from_adaptation_plan(_plan("Primus", None, [32, 32, 32]))
    with pytest.raises(PluginError, match=r"pretraining patch \[36, 32, 32\] of PrimusM is not a multiple of its "
                                          r"patch embedding \[8, 8, 8\]"):
        record_from_adaptation_plan(_plan("PrimusM", None, [36, 32, 32]))


def test_a_primus_preset_is_written_by_name_as_nnssl_writes_it_and_reads_back():
    from monai_ssl_plugin.transfer.nnssl import nnssl_parser_problem

    rec = record_from_adaptation_plan(_plan("PrimusM", None, [160, 160, 160]))
    plan = nnssl_adaptation_plan(rec)
    assert plan["architecture_plans"] == {"arch_class_name": "PrimusM", "arch_kwargs": None,
                                          "arch_kwargs_requiring_import": None}
    assert plan["pretrain_plan"]["configurations"]["3d_fullres"]["patch_size"] == [160, 160, 160]
    assert nnssl_parser_problem(plan) is None
    assert record_from_adaptation_plan(plan).backbone_kwargs == rec.backbone_kwargs
    tiny = record_from_adaptation_plan(_plan("Primus", {"embed_dim": 48, "encoder_eva_depth": 2,
                                                        "encoder_eva_numheads": 2}, [32, 32, 32]))
    explicit = nnssl_adaptation_plan(tiny)["architecture_plans"]  # not a preset: nnssl's names, explicit
    assert explicit["arch_class_name"] == "Primus" and explicit["arch_kwargs"]["encoder_eva_depth"] == 2
    assert explicit["arch_kwargs"]["init_values"] is None and explicit["arch_kwargs"]["scale_attn_inner"] is False


def test_primus_kwargs_the_network_does_not_use_are_said_not_dropped_silently():
    plan = _plan("Primus", {"embed_dim": 48, "encoder_eva_depth": 2, "encoder_eva_numheads": 2,
                            "num_register_tokens": 0, "drop_path_rate": 0.2}, [32, 32, 32])
    with pytest.warns(UserWarning, match="arch_kwargs drop_path_rate are not used to build the network"):
        kw = record_from_adaptation_plan(plan).backbone_kwargs["arch_kwargs"]
    assert "drop_path_rate" not in kw and kw["num_register_tokens"] == 0
