"""Intensity normalisation compatibility: the one check every consumer runs.

A pretrained network expects its inputs on the scale it was pretrained on. The record names the
scheme per input channel (nnU-Net scheme names such as ``CTNormalization``); a consumer names its
own, per channel: an nnU-Net plans file with scheme names, a MONAI pipeline with transform names
(``NormalizeIntensityd``). :func:`compare_normalization` pairs them and says where they differ;
what a difference means (refuse, warn) is the consumer's rule.

- **Names** are compared by category, so the two vocabularies meet: ``ZScoreNormalization`` and
  ``NormalizeIntensityd`` are the same transform; every nnU-Net scheme is a category of its own,
  so two nnU-Net names match exactly when they are equal.
- **Channels** are paired the way the ``channels`` adaptation tiles the stem
  (:func:`~monai_ssl_plugin.transfer.adaptation.repeat_input_channels`): consumer channel ``j``
  reads what pretrained channel ``j mod C`` read, so ``[CT, ZScore]`` pretrained fits
  ``[CT, ZScore, CT, ZScore]``, not ``[CT, CT, ZScore, ZScore]``. A record giving one scheme for a
  multi-channel pretraining applies it to every pretrained channel. Counts that cannot be paired
  (fewer consumer channels, or not a multiple) are not compared: ``expected`` is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Names of the same intensity transform (nnU-Net schemes, MONAI transforms). Different categories put
# the pretrained network's inputs on different scales.
NORMALIZATION_CATEGORIES = {
    "zscore": ("zscorenormalization", "zscore", "z-score", "normalizeintensity", "normalizeintensityd"),
    "ct": ("ctnormalization", "ct"),
    "window": ("scaleintensityrange", "scaleintensityranged", "window", "ct_window"),
    "percentile_window": ("scaleintensityrangepercentiles", "scaleintensityrangepercentilesd"),
    "minmax": ("rescaleto01normalization", "scaleintensity", "scaleintensityd", "minmax"),
    "rgb01": ("rgbto01normalization",),  # a fixed division by 255, not a per-image min-max
    "none": ("nonormalization", "none", "identity"),
}


def normalization_category(name: str) -> str:
    """The category of a scheme or transform name (unknown names are their own category)."""
    n = str(name).strip().lower().split(".")[-1]
    for cat, names in NORMALIZATION_CATEGORIES.items():
        if n in names or n == cat:
            return cat
    return n


@dataclass
class NormalizationCheck:
    """The pretrained intensity normalisation compared per input channel of the consumer.

    ``expected[j]`` is the scheme pretraining used for what the consumer's input channel ``j`` reads
    (None when the channel counts cannot be paired); ``differences`` names each channel whose scheme
    differs; ``repeat`` is how often the pretrained channels are tiled (1: no adaptation).
    """

    expected: list[str] | None
    consumer: list[str]
    pretrained_channels: int
    repeat: int
    differences: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.expected is not None and not self.differences


def compare_normalization(pretrained: Sequence[str] | None, consumer: Sequence[str],
                          pretrained_channels: int | None = None, *, consumer_name: str = "the plans"
                          ) -> NormalizationCheck:
    """Pair the consumer's scheme of each input channel with the pretrained scheme behind it."""
    schemes, consumer = [str(s) for s in (pretrained or [])], [str(s) for s in consumer]
    channels = int(pretrained_channels or len(schemes) or 1)
    if len(schemes) == 1 and channels > 1:
        schemes = schemes * channels
    n = len(consumer)
    if not schemes or len(schemes) != channels or n < channels or n % channels:
        return NormalizationCheck(None, consumer, channels, 1)
    repeat = n // channels
    expected = schemes * repeat
    diffs = [f"channel {j}: {have} in {consumer_name}, {want} pretrained"
             + (f" (pretrained channel {j % channels} repeated)" if repeat > 1 else "")
             for j, (have, want) in enumerate(zip(consumer, expected))
             if normalization_category(have) != normalization_category(want)]
    return NormalizationCheck(expected, consumer, channels, repeat, diffs)


def normalization_matches(pretrained: Sequence[str] | None, consumer: Sequence[str],
                          pretrained_channels: int | None = None) -> tuple[bool, int]:
    """(equal per channel, repeat) of :func:`compare_normalization`."""
    check = compare_normalization(pretrained, consumer, pretrained_channels)
    return check.matches, check.repeat
