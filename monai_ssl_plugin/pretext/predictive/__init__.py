"""Predictive pretexts: classify a transformation of the input (rotation, cube puzzle, patch position)."""

from monai_ssl_plugin.pretext.predictive import relative_position, rotation, rubiks_cube  # noqa: F401  (register)
