"""Did a bundle run learn? Its checkpoint's pretext against the same pretext freshly initialised, on
fixed batches with fixed random draws, so that only the weights differ between the two scores."""

from __future__ import annotations

import copy
import os
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.utils import set_determinism
from torch import nn

from monai_ssl_plugin.bundles import train_configs


def fresh_pretext(bundle: str | os.PathLike, overrides: dict[str, Any], n_batches: int,
                  batch_size: int) -> tuple[nn.Module, list[torch.Tensor]]:
    """The bundle's pretext as its config builds it with ``overrides`` (on CPU), freshly initialised
    (MONAI determinism seed 0), and ``n_batches`` batches of the config's patches in order."""
    torch.set_num_threads(1)
    parser = ConfigParser()
    parser.read_config(train_configs(bundle))
    for key, value in {**overrides, "device": "cpu"}.items():
        parser[key] = value
    set_determinism(0)
    pretext = parser.get_parsed_content("pretext")
    patches = parser.get_parsed_content("train#patches")
    batches = [torch.stack([torch.as_tensor(patches[i * batch_size + j]["image"]) for j in range(batch_size)])
               for i in range(n_batches)]
    return pretext, batches


def fixed_draw_means(pretext: nn.Module, batches: Sequence[torch.Tensor], keys: Sequence[str]) -> list[float]:
    """Means over ``batches`` of the outputs ``keys``, each batch with its own fixed seed (the same views,
    masks and labels whatever the weights); a copy in training mode runs, ``pretext`` is left as it was."""
    model = copy.deepcopy(pretext).train()
    values: list[list[float]] = [[] for _ in keys]
    with torch.no_grad():
        for i, x in enumerate(batches):
            torch.manual_seed(1000 + i)
            out = model({"image": x})
            for column, key in zip(values, keys):
                column.append(float(out[key]))
    return [statistics.mean(column) for column in values]
