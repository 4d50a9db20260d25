"""Hybrid pretexts: several objectives over one backbone (Swin UNETR pretraining, user-composed sums)."""

from monai_ssl_plugin.pretext.hybrid import composed, swin_unetr  # noqa: F401  (register)
