"""Test-time augmentation (TTA): average the class probabilities of a few views of each image.

``train.tta`` picks the views, all on the normalized batch, on its device:

* ``flip``: the image and its mirror (2 views);
* ``crop``: the image and four shifted crops, zero-padded by ``p`` pixels
  (2 at 32 px, scaled for smaller images: at least 1) and cut at the four
  corners, i.e. shifted by ``p`` along both axes (5 views);
* ``flip_crop``: the five crops and their mirrors (10 views, AlexNet's
  "ten patches").

Flips are used only where a mirror keeps the class (the config refuses them
on digits, letters and house numbers). TTA runs once, after training, on the
selected weights: on the test split with ``train.evaluate_test`` and on the
validation split with ``train.tta_on_val`` (the same batches the plain
validation used, ``limit_val_batches`` included). Its metrics are separate
(``test_acc_tta``, ``test_loss_tta``, ``val_acc_tta``, ``val_loss_tta``;
the loss is the NLL of the averaged probabilities); they never pick an epoch
or a trial and never replace ``test_acc`` / ``best_val_acc``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from ..names import TTA_SUFFIX
from .module import MeanLoss

View = Callable[[torch.Tensor], torch.Tensor]


def crop_pad(size: int) -> int:
    """Shift of the crop views in pixels: 2 at 32 px, scaled for smaller images, at least 1."""
    return max(1, round(2 * size / 32)) if size < 32 else 2


def _shift(dy: int, dx: int, p: int) -> View:
    def view(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return F.pad(x, (p, p, p, p))[..., dy:dy + h, dx:dx + w]

    return view


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _mirror(view: View) -> View:
    return lambda x: view(x).flip(-1)


def tta_views(mode: str, size: int) -> list[View]:
    """The views of ``mode`` (``flip``, ``crop``, ``flip_crop``) for images of side ``size``."""
    if mode == "flip":
        return [_identity, _mirror(_identity)]
    p = crop_pad(size)
    crops = [_identity] + [_shift(dy, dx, p) for dy in (0, 2 * p) for dx in (0, 2 * p)]
    if mode == "crop":
        return crops
    if mode == "flip_crop":
        return crops + [_mirror(v) for v in crops]
    raise ValueError(f"train.tta must be flip, crop or flip_crop (got {mode!r})")


def tta_probs(net: nn.Module, x: torch.Tensor, views: list[View]) -> torch.Tensor:
    """Class probabilities of ``x`` averaged over ``views`` (one forward per view)."""
    probs = F.softmax(net(views[0](x)).float(), dim=1)
    for view in views[1:]:
        probs += F.softmax(net(view(x)).float(), dim=1)
    return probs / len(views)


class TTAEvaluator(pl.LightningModule):
    """Validates or tests a trained network with averaged views; logs ``<stage>_acc_tta``.

    Args:
        net: the trained network (shared, not copied).
        mode: ``flip``, ``crop`` or ``flip_crop``.
        num_classes: for the accuracy.
        size: image side (the crop shift scales with it).
    """

    def __init__(self, net: nn.Module, mode: str, num_classes: int, size: int):
        super().__init__()
        self.net, self.views = net, tta_views(mode, size)
        self.acc = MulticlassAccuracy(num_classes=num_classes, average="micro",
                                      validate_args=False)
        self.loss = MeanLoss()

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        probs = tta_probs(self.net, x, self.views)
        self.loss.update(F.nll_loss(probs.clamp_min(1e-12).log(), y), y.shape[0])
        self.acc.update(probs, y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch)

    def _log(self, stage: str) -> None:
        self.log_dict({f"{stage}_acc{TTA_SUFFIX}": self.acc.compute(),
                       f"{stage}_loss{TTA_SUFFIX}": self.loss.compute()}, sync_dist=False)
        self.acc.reset()
        self.loss.reset()

    def on_validation_epoch_end(self) -> None:
        self._log("val")

    def on_test_epoch_end(self) -> None:
        self._log("test")


def evaluate_tta(cfg: Any, module: Any, dm: Any,
                 make_trainer: Callable[..., pl.Trainer]) -> dict[str, float]:
    """TTA metrics of a trained module: ``val_*_tta`` (``train.tta_on_val``) and
    ``test_*_tta`` (``train.evaluate_test``); empty for ``train.tta: none``.

    Args:
        cfg: the concrete config.
        module: the :class:`~hpstudy.train.ClassifierModule` holding the selected weights.
        dm: its prepared data module.
        make_trainer: ``build_trainer`` (a Trainer for the config, no logger).
    """
    t = cfg.train
    if t.tta == "none":
        return {}
    evaluator = TTAEvaluator(module.net, t.tta, dm.num_classes, dm.input_size)
    out: dict[str, Any] = {}
    if t.tta_on_val and dm.has_val:  # the batches the plain validation saw
        res = make_trainer(cfg, []).validate(evaluator, datamodule=dm, verbose=False)
        out.update(res[0] if res else {})
    if t.evaluate_test and dm.has_test:  # the whole test split, as the plain test
        res = make_trainer(cfg, [], limit_test_batches=None).test(evaluator, datamodule=dm,
                                                                  verbose=False)
        out.update(res[0] if res else {})
    return {k: float(v) for k, v in out.items()}
