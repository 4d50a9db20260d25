"""A RetinaNet detection trainer and box prediction for the detection bundle (``monai.apps.detection``).

MONAI core has no detection engine (the model zoo's ``lung_nodule_ct_detection`` ships one in its
``scripts/``); this is the same idea as an installed, importable class: each iteration runs the
``RetinaNetDetector`` in training mode on a list of images with their boxes and labels and steps on
``classification + box regression`` loss.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys

from monai_ssl_plugin.checkpoint import atomic_write_text


def _flatten(batch: Any) -> list[dict[str, Any]]:
    """``no_collation`` batches are lists of dicts, or lists of lists (``num_samples`` crops per image)."""
    out: list[dict[str, Any]] = []
    for item in batch if isinstance(batch, (list, tuple)) else [batch]:
        out.extend(_flatten(item) if isinstance(item, (list, tuple)) else [item])
    return out


def detection_prepare_batch(batchdata: Any, device: str | torch.device | None = None, non_blocking: bool = False,
                            **kwargs: Any) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]] | None]:
    """(images, targets) from a ``no_collation`` batch: images ``(C, *spatial)``, targets ``{"box", "label"}``."""
    items = _flatten(batchdata)
    images = [torch.as_tensor(d["image"]).to(device=device, non_blocking=non_blocking, **kwargs) for d in items]
    if all(isinstance(d.get("box"), torch.Tensor) for d in items):
        targets = [{"box": d["box"].to(device=device, non_blocking=non_blocking, **kwargs),
                    "label": torch.as_tensor(d["label"]).long().to(device=device, non_blocking=non_blocking)}
                   for d in items]
        return images, targets
    return images, None


class DetectionTrainer(Trainer):
    """Trains a ``RetinaNetDetector``: loss = w_cls * classification + w_box * box regression.

    Args are those of ``monai.engines.Trainer`` plus ``detector``, ``optimizer``, ``train_handlers``,
    ``cls_weight`` / ``box_weight``.
    """

    def __init__(self, device: torch.device | str, max_epochs: int, train_data_loader: Iterable, detector: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, epoch_length: int | None = None, non_blocking: bool = False,
                 prepare_batch: Callable = detection_prepare_batch, train_handlers: Sequence | None = None,
                 amp: bool = False, cls_weight: float = 1.0, box_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(device=torch.device(device), max_epochs=max_epochs, data_loader=train_data_loader,
                         epoch_length=epoch_length, non_blocking=non_blocking, prepare_batch=prepare_batch,
                         handlers=train_handlers, amp=amp, decollate=False, **kwargs)
        self.detector = detector
        self.network = detector.network  # what checkpoint savers and SSL handlers look for
        self.optimizer = optimizer
        self.cls_weight, self.box_weight = float(cls_weight), float(box_weight)

    def _iteration(self, engine: "DetectionTrainer", batchdata: Any) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, targets = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        if targets is None:
            raise ValueError("Detection training needs `box` and `label` in every item.")
        det = engine.detector
        targets = [{det.target_box_key: t["box"], det.target_label_key: t["label"]} for t in targets]
        engine.state.output = {Keys.IMAGE: images, Keys.LABEL: targets}
        engine.detector.train()
        engine.optimizer.zero_grad(set_to_none=True)
        device_type = engine.state.device.type if isinstance(engine.state.device, torch.device) else "cpu"
        with torch.autocast(device_type, enabled=bool(engine.amp)):
            losses = engine.detector(images, targets)
            cls, box = losses[engine.detector.cls_key], losses[engine.detector.box_reg_key]
            loss = engine.cls_weight * cls + engine.box_weight * box
        engine.state.output.update({engine.detector.cls_key: cls.detach(), engine.detector.box_reg_key: box.detach(),
                                    Keys.LOSS: loss})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if engine.amp and engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.state.output[Keys.LOSS] = loss.detach()
        return engine.state.output


@torch.no_grad()
def predict_boxes(detector: torch.nn.Module, dataloader: Iterable, output_file: str | Path,
                  device: str | torch.device = "cpu", use_inferer: bool = False) -> Path:
    """Run ``detector`` (eval mode) over ``dataloader`` and write ``{"predictions": [{"image", "box", "label",
    "score"}]}`` (boxes in the detector's standard mode, image coordinates) to ``output_file``.
    ``use_inferer``: run through the detector's sliding-window inferer (``detector.inferer``)."""
    detector.eval()
    rows = []
    for batch in dataloader:
        items = _flatten(batch)
        images = [torch.as_tensor(d["image"]).to(device) for d in items]
        outputs = detector(images, use_inferer=use_inferer)
        for d, out in zip(items, outputs):
            meta = getattr(d["image"], "meta", {}) or {}
            rows.append({"image": str(meta.get("filename_or_obj", "")),
                         "box": out[detector.target_box_key].cpu().tolist(),
                         "label": out[detector.target_label_key].cpu().tolist(),
                         "score": out[detector.pred_score_key].cpu().tolist()})
    path = Path(output_file)
    atomic_write_text(json.dumps({"predictions": rows}, indent=1), path)
    print(f"[monai-ssl] wrote {len(rows)} predictions to {path}", flush=True)
    return path
