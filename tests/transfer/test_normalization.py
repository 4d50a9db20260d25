"""One normalisation check for both consumers: names compared by category, channels paired as the stem is tiled."""

from __future__ import annotations

from monai_ssl_plugin.transfer.normalization import compare_normalization, normalization_category


def test_names_from_both_vocabularies_meet_and_nnunet_schemes_stay_distinct():
    assert normalization_category("ZScoreNormalization") == normalization_category("NormalizeIntensityd")
    assert normalization_category("monai.transforms.NormalizeIntensityd") == "zscore"
    assert compare_normalization(["ZScoreNormalization"], ["NormalizeIntensityd"], 1).matches
    schemes = ["CTNormalization", "ZScoreNormalization", "NoNormalization", "RescaleTo01Normalization",
               "RGBTo01Normalization"]
    assert len({normalization_category(s) for s in schemes}) == len(schemes)  # equal category <=> equal name
    check = compare_normalization(["RGBTo01Normalization"], ["RescaleTo01Normalization"], 1,
                                  consumer_name="this pipeline")
    assert check.differences == ["channel 0: RescaleTo01Normalization in this pipeline, RGBTo01Normalization pretrained"]


def test_channels_are_paired_as_the_stem_is_tiled_whatever_the_names():
    tiled = compare_normalization(["CTNormalization", "ZScoreNormalization"],
                                  ["ct", "NormalizeIntensityd", "CTNormalization", "zscore"], 2)
    assert tiled.matches and tiled.repeat == 2
    assert compare_normalization(["CTNormalization", "ZScoreNormalization"], ["ct"], 2).expected is None
