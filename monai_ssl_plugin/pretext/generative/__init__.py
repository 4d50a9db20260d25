"""Generative / reconstruction pretexts: restore a masked or corrupted input."""

from monai_ssl_plugin.pretext.generative import models_genesis  # noqa: F401  (registers)
from monai_ssl_plugin.pretext.generative import mae_vit  # noqa: F401  (registers)
from monai_ssl_plugin.pretext.generative import denoising_ae  # noqa: F401  (registers)
