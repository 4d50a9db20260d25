"""Sharing trained bundles the MONAI model zoo's way: package (``package.py``) and install/verify (``install.py``).

- :func:`package_bundle`: a pretraining run or checkpoint + its bundle -> ``OUT/NAME/`` (configs,
  ``models/model.pt``, ``configs/metadata.json`` with provenance and the sha256 of the weights,
  ``large_files.yml`` above 25 MB) and ``OUT/NAME.zip`` that unpacks to ``NAME/...``.
- :func:`install_bundle`: a folder, a zip or an http(s)/file URL -> ``DEST/NAME/``, verified by
  sha256 before use; zip members may not leave ``DEST``; weights load with ``weights_only=True``.
- :func:`verify_bundle`: the checks of an installed bundle on their own; :func:`foreign_code` lists
  the Python its configs run beyond the plugin's and MONAI's own (``install`` refuses it unless trusted).
- ``manifest.json`` (``manifest.py``): the sha256 of every file of a packaged bundle.
"""

from monai_ssl_plugin.sharing.config_code import foreign_code
from monai_ssl_plugin.sharing.install import install_bundle, load_shared_weights, verify_bundle
from monai_ssl_plugin.sharing.package import LARGE_FILE_BYTES, URL_PLACEHOLDER, package_bundle

__all__ = ["LARGE_FILE_BYTES", "URL_PLACEHOLDER", "foreign_code", "install_bundle", "load_shared_weights", "package_bundle",
           "verify_bundle"]
