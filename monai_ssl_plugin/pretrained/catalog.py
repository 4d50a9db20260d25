"""The catalog of published SSL checkpoints: where each file is, what it is, and who says so.

Every fact here comes from the publisher's own pages or code (model cards, READMEs, training
scripts); nothing is guessed. Where the publisher gives no sha256, ``sha256`` is ``None`` and the
download says how the file was checked instead (the Hub's own LFS sha256, or trust on first use).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from monai_ssl_plugin.errors import PluginError

OPENMIND_PAPER = ("Wald et al., \"An OpenMind for 3D medical vision self-supervised learning\", "
                  "arXiv:2412.17041 (ICCV 2025)")
OPENMIND_DATA = ("OpenMind: public 3D brain MRI from OpenNeuro, standardised (huggingface.co/datasets/AnonRes/OpenMind); "
                 "nnssl preprocessing: 1 mm isotropic, z-score per image")
OPENMIND_ARCH = ("nnU-Net ResidualEncoderUNet 'ResEnc-L' (6 stages, 32-320 features, blocks 1-3-4-6-6-6), "
                 "nnssl_adaptation_plan inside the file")
NNSSL_KEYS = ("network_weights: nnssl's names = nnU-Net's ResidualEncoderUNet names (encoder.stem.*, "
              "encoder.stages.*, decoder.* where the pretext has one); pretext heads (projector.*, *_proj_head.*) dropped. "
              "Identity map into both consumers. No MONAI network has ResEnc-L's encoder (DynUNet(res_block=True) "
              "has one block per stage and a strided 1x1 skip; ResEnc-L has 1-3-4-6-6-6 blocks with an avg-pool "
              "skip), so MONAI bundles use nnU-Net's own ResidualEncoderUNet as their network")
OPENMIND_CONSUMERS = ("nnU-Net trainers (-tr nnUNetTrainerSSL ...); MONAI overlay / load_pretrained with nnU-Net's "
                      "ResidualEncoderUNet as the bundle's network_def (_target_: dynamic_network_architectures."
                      "architectures.unet.ResidualEncoderUNet, the record's arch_kwargs): encoder.* loads unchanged")
PRIMUS_ARCH = ("nnssl Primus-M (a ViT: 8x8x8 patch embedding 'down_projection', EVA transformer 'eva', learned position "
               "embedding 'eva.pos_embed'), nnssl_adaptation_plan inside the file")


@dataclass(frozen=True)
class PretrainedEntry:
    """One published checkpoint. ``source`` is ``hf`` (Hugging Face Hub repo + file) or ``https`` (a URL)."""

    name: str
    title: str
    source: str
    filename: str
    converter: str  # a key of convert.CONVERTERS, or of convert.VERIFIERS for a file used as published
    paper: str
    data: str
    licence: str
    architecture: str
    key_map: str
    consumer: str  # which of the plugin's consumers can use the converted file
    repo_id: str | None = None
    url: str | None = None
    revision: str | None = None  # a Hub revision (commit) when the publisher pins one
    sha256: str | None = None  # only when the publisher gives it
    homepage: str = ""
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        if self.source == "hf":
            return f"https://huggingface.co/{self.repo_id}/resolve/{self.revision or 'main'}/{self.filename}"
        return str(self.url)

    @property
    def hash_policy(self) -> str:
        """How a download of this entry is checked, in words."""
        if self.sha256:
            return f"sha256 {self.sha256} (published)"
        if self.source == "hf":
            return ("no sha256 published by the authors: checked against the sha256 the Hugging Face Hub "
                    "publishes for the file (its LFS object id); recorded in the cache")
        return "no sha256 published: trust on first use (the first download's sha256 is recorded and every later copy must match it)"


def _openmind(method: str, repo_id: str, title: str, notes: str = "") -> PretrainedEntry:
    return PretrainedEntry(
        name=f"openmind-resencl-{method.lower()}", title=f"ResEnc-L pretrained with {title} on OpenMind (nnssl)",
        source="hf", repo_id=repo_id, filename="checkpoint_final.pth", converter="nnssl_resenc",
        paper=OPENMIND_PAPER, data=OPENMIND_DATA, licence="CC-BY-4.0 (model card)", architecture=OPENMIND_ARCH,
        key_map=NNSSL_KEYS, consumer=OPENMIND_CONSUMERS,
        homepage="https://github.com/MIC-DKFZ/nnssl", notes=notes, extra={"method": method})


def _openmind_primus(method: str, repo_id: str, title: str) -> PretrainedEntry:
    return PretrainedEntry(
        name=f"openmind-primusm-{method.lower()}", title=f"Primus-M pretrained with {title} on OpenMind (nnssl)",
        source="hf", repo_id=repo_id, filename="checkpoint_final.pth", converter="nnssl_primus",
        paper=OPENMIND_PAPER, data=OPENMIND_DATA, architecture=PRIMUS_ARCH,
        licence=("not verified here: read this repository's model card before use (the OpenMind ResEnc-L "
                 "cards state CC-BY-4.0)"),
        key_map=("identity: nnssl's down_projection.* / eva.* are nnU-Net's Primus keys (the record: nnunet.Primus, "
                 "arch_kwargs of Primus-M at the pretraining patch 160^3); the mask token and SimMIM decoder are dropped"),
        consumer=("the plugin's nnU-Net trainers (-tr nnUNetTrainerSSL ..., plans from monai-ssl nnunet-plans DATASET "
                  "--checkpoint <converted>: patch 160^3); the original file: nnU-Net master's "
                  "nnUNetv2_train_pretrained ... -tr PretrainedTrainer_Primusx. Not the MONAI overlay"),
        homepage="https://github.com/MIC-DKFZ/nnssl",
        notes=("The Hub repository holds checkpoint_final.pth and adaptation_plan.json (what nnU-Net master's -pc "
               "download fetches); the plan: arch_class_name PrimusM, Dataset745_OpenNeuro_v2, nnsslPlans, "
               "configuration onemmiso. `get` fetches and checks the checkpoint, which carries the plan too."),
        extra={"method": method, "arch_class_name": "PrimusM"})


_AVOID_AS_IS = "The authors recommend fine-tuning, not frozen feature extraction."
CATALOG: dict[str, PretrainedEntry] = {e.name: e for e in [
    _openmind("MAE", "MIC-DKFZ/ResEncL-OpenMind-MAE", "a masked autoencoder (MAE)", _AVOID_AS_IS),
    _openmind("VoCo", "MIC-DKFZ/ResEncL-OpenMind-VoCo", "volume contrast (VoCo)",
              "Encoder only (VoCo trains no decoder). " + _AVOID_AS_IS),
    _openmind("VF", "AnonRes/ResEncL-OpenMind-VF", "VolumeFusion (VF)",
              "Published under AnonRes/; the OpenMind collection now lives under MIC-DKFZ/ (the Hub redirects). "
              + _AVOID_AS_IS),
    _openmind("SimCLR", "AnonRes/ResEncL-OpenMind-SimCLR", "SimCLR",
              "Encoder only. Published under AnonRes/ (the Hub redirects to MIC-DKFZ/). " + _AVOID_AS_IS),
    _openmind("S3D", "AnonRes/ResEncL-OpenMind-S3D", "SparK 3D (S3D)",
              "Published under AnonRes/ (the Hub redirects to MIC-DKFZ/). " + _AVOID_AS_IS),
    _openmind("SwinUNETR", "AnonRes/ResEncL-OpenMind-SwinUNETR", "the Swin UNETR pretext (on a CNN)",
              "Encoder only. Published under AnonRes/ (the Hub redirects to MIC-DKFZ/). " + _AVOID_AS_IS),
    _openmind_primus("SimMIM", "AnonRes/PrimusM-OpenMind-SimMIM", "SimMIM"),
    PretrainedEntry(
        name="monai-swinunetr-ssl", title="Swin UNETR encoder (swinViT) self-supervised on 5,050 CT volumes",
        source="https", filename="model_swinvit.pt",
        url="https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/model_swinvit.pt",
        converter="swin_ssl", paper=("Tang et al., \"Self-Supervised Pre-Training of Swin Transformers for 3D Medical "
                                     "Image Analysis\", CVPR 2022"),
        data=("5,050 public CT volumes; pretraining script defaults: spacing 1.5x1.5x2.0 mm, "
              "ScaleIntensityRanged -1000..1000 HU -> 0..1, 96^3 crops"),
        licence="Apache-2.0 (Project-MONAI/research-contributions)",
        architecture="MONAI SwinUNETR swinViT, feature_size 48, depths 2-2-2-2, heads 3-6-12-24, window 7, v1 blocks",
        key_map=("{'state_dict': {'module.<swin key>'}} -> swinViT.<swin key>, mlp.fc1/fc2 -> mlp.linear1/linear2 "
                 "(MONAI's SwinUNETR.load_from reads the same names)"),
        consumer="MONAI overlay / load_pretrained into monai.networks.nets.SwinUNETR(feature_size=48)",
        homepage="https://github.com/Project-MONAI/research-contributions/tree/main/SwinUNETR/Pretrain",
        notes="Encoder only; the decoder and skip blocks start from scratch.",
        extra={"spacing": [1.5, 1.5, 2.0], "normalization": ["ScaleIntensityRanged"], "patch_size": [96, 96, 96],
               "pretext": "swin_unetr_ssl"}),
    PretrainedEntry(
        name="voco-b-ssl", title="VoCo-B: Swin UNETR v2 (feature_size 48) self-supervised with VoCo on PreCT-160K",
        source="hf", repo_id="Luffy503/VoCo", filename="VoCo_B_SSL_head.pt", converter="voco_swin",
        paper=("Wu, Zhuang & Chen, \"Large-Scale 3D Medical Image Pre-training with Geometric Context Priors\", "
               "TPAMI 2026 (arXiv:2410.09890); VoCo: CVPR 2024"),
        data=("PreCT-160K: about 160k public CT volumes; pretraining script defaults: spacing 1.5 mm, "
              "ScaleIntensityRanged -175..250 HU -> 0..1, 64^3 crops"),
        licence="Apache-2.0 (Luffy03/Large-Scale-Medical)",
        architecture="MONAI SwinUNETR(use_v2=True), feature_size 48: swinViT + encoder1-4 + encoder10 (53M params with heads)",
        key_map=("VoCoHead state dict ([module.]backbone.swinViT.*, backbone.encoder{1,2,3,4,10}.*, student.*, teacher.*) "
                 "-> swinViT.* / encoder*.*; projection heads dropped (as the authors' own loader does)"),
        consumer="MONAI overlay / load_pretrained into monai.networks.nets.SwinUNETR(feature_size=48, use_v2=True)",
        homepage="https://github.com/Luffy03/Large-Scale-Medical",
        notes="L (VoCo_L_SSL_head.pt, feature_size 96) and H (feature_size 192) exist in the same repo.",
        extra={"spacing": [1.5, 1.5, 1.5], "normalization": ["ScaleIntensityRanged"], "patch_size": [64, 64, 64],
               "pretext": "voco"}),
]}


def get_entry(name: str) -> PretrainedEntry:
    """The catalog entry called ``name``, or one line naming the closest names."""
    if name in CATALOG:
        return CATALOG[name]
    close = difflib.get_close_matches(str(name), list(CATALOG), n=3, cutoff=0.4)
    hint = f"Did you mean {', '.join(close)}? " if close else ""
    raise PluginError(f"No published checkpoint called {name!r} in the catalog.",
                      f"{hint}Run `monai-ssl pretrained list` for the names.")
