"""Ignite handlers of the SSL trainer; each is an object with ``attach(engine)``.

TensorBoard scalars need no glue: ``monai.handlers.TensorBoardStatsHandler(log_dir,
output_transform=lambda out: out)`` writes every entry of the trainer's ``{name: float}`` output.
"""

from monai_ssl_plugin.engine.handlers.checkpoint import ResumableDataset, SSLCheckpointHandler
from monai_ssl_plugin.engine.handlers.collapse import CollapseHandler
from monai_ssl_plugin.engine.handlers.data_wait import DataWaitHandler
from monai_ssl_plugin.engine.handlers.nan_guard import NaNGuard
from monai_ssl_plugin.engine.handlers.online_probe import OnlineProbeHandler
from monai_ssl_plugin.engine.handlers.payoff import PayoffMonitor
from monai_ssl_plugin.engine.handlers.progress import ProgressHandler

__all__ = ["CollapseHandler", "DataWaitHandler", "NaNGuard", "OnlineProbeHandler", "PayoffMonitor", "ProgressHandler", "ResumableDataset",
           "SSLCheckpointHandler"]
