"""The SSL training engine (monai.engines / ignite) and its handlers."""

from monai_ssl_plugin.engine.trainer import SSLTrainer

__all__ = ["SSLTrainer"]
