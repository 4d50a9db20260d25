"""Modality presets, view generators and corruptions, as batched tensor operations."""
