"""Standard low-label evaluation of SSL pretexts, so that "does pretraining pay off with few labels?" has one
reproducible answer: protocol, splits, routes, runner, report.

``monai-ssl evaluate --config PROTOCOL.yaml --output_dir DIR`` runs :func:`runner.evaluate`.
"""

from monai_ssl_plugin.evaluation.protocol import Protocol, load_protocol
from monai_ssl_plugin.evaluation.splits import Splits, make_splits

__all__ = ["Protocol", "Splits", "load_protocol", "make_splits"]
