"""SSL weights into MONAI classification, detection and segmentation networks and bundles.

- :func:`load_pretrained` (plain PyTorch), :class:`SSLInitHandler` (any bundle's ``train#handlers``),
- :func:`write_overlay` (``configs/ssl_init.yaml`` for an existing bundle, merged after its train config),
- :func:`resolve_target` (which sub-module receives the weights); :func:`permute_axes` and
  :func:`axis_permutation` are the transfer layer's (:mod:`monai_ssl_plugin.transfer.axes`), public here too,
- fine-tuning controls: :class:`Freezer`, :func:`param_groups`, :func:`linear_probe`.

See docs/monai.md.
"""

from monai_ssl_plugin.monai_bundles.finetune import Freezer, linear_probe, param_groups, pretrained_parameters
from monai_ssl_plugin.monai_bundles.handler import SSLInitHandler
from monai_ssl_plugin.monai_bundles.load import load_pretrained
from monai_ssl_plugin.monai_bundles.overlay import monai_overlay, write_overlay
from monai_ssl_plugin.monai_bundles.targets import Target, resolve_target
from monai_ssl_plugin.transfer.axes import axis_permutation, permute_axes

__all__ = ["Freezer", "SSLInitHandler", "Target", "axis_permutation", "linear_probe", "load_pretrained", "monai_overlay",
           "param_groups", "permute_axes", "pretrained_parameters", "resolve_target", "write_overlay"]
