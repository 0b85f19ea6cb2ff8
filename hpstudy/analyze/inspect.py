"""What a trained network learned: predictions, first-layer weights, class activation maps.

Pure computation on a given network and batches (torch and numpy only; it
imports nothing else of hpstudy, and :mod:`hpstudy.analyze` does not import
it eagerly: torch is loaded only by those who inspect). Finding the network
and its data in the stores is :mod:`hpstudy.inspection`'s job; drawing the
result is :mod:`hpstudy.report.inspect`'s.

* :func:`predict`: class probabilities of every image (in batches, no
  gradients) and the images as the network saw them (denormalized to uint8).
* :func:`first_layer`: the first conv (or linear) layer's weights as images,
  ``(F, C, k, k)``: the course's "what the first layer looks for".
* :func:`class_activation_maps` (Zhou et al., 2016; thesis chapter 5): for a
  network whose logits are ``classifier(mean_HW(F))``, the map of class
  ``k`` is ``sum_c W[k, c] * F[c]``, upsampled to the image; its spatial mean
  plus the bias is exactly the logit of ``k``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_FILTERS = 64  # the first layer's units drawn (a 8x8 grid)


@dataclass
class Inspection:
    """What the inspection of one trained network found (plain data; the report draws it).

    Attributes:
        title: the page title.
        facts: ``(label, value)`` rows for the page (source, run, split, ...).
        split: ``val`` or ``test``: the split the images come from.
        class_names: one name per class.
        labels: ``(N,)`` true classes.
        probs: ``(N, K)`` predicted class probabilities.
        images: ``(N, H, W, C)`` uint8, as the network saw them (denormalized).
        filters: ``(F, C, k, k)`` first-layer weights, or None (``filters_note`` says why).
        filters_layer: the layer's name and kind.
        cam_index: indices (into ``images``) of the images with a class activation map.
        cam_class: the class of each map (the predicted one).
        cams: ``(M, H, W)`` raw class activation maps at image size, or None
            (``cam_note`` says why: no global-average-pooling head).
    """

    title: str
    split: str
    class_names: list[str]
    labels: np.ndarray
    probs: np.ndarray
    images: np.ndarray
    facts: list[tuple[str, str]] = field(default_factory=list)
    filters: np.ndarray | None = None
    filters_layer: str = ""
    filters_note: str = ""
    cam_index: np.ndarray | None = None
    cam_class: np.ndarray | None = None
    cams: np.ndarray | None = None
    cam_note: str = ""

    @property
    def preds(self) -> np.ndarray:
        """``(N,)`` predicted classes (argmax of ``probs``)."""
        return self.probs.argmax(axis=1) if len(self.probs) else np.zeros(0, dtype=np.int64)

    @property
    def accuracy(self) -> float:
        """Share of correct predictions (NaN without images)."""
        return float((self.preds == self.labels).mean()) if len(self.labels) else math.nan


def to_uint8_images(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """Normalized ``(N, C, H, W)`` -> ``(N, H, W, C)`` uint8: ``(x * std + mean) * 255``."""
    c = x.shape[1]
    m = mean.reshape(1, c, 1, 1).to(x)
    s = std.reshape(1, c, 1, 1).to(x)
    img = ((x * s + m) * 255).round().clamp(0, 255).to(torch.uint8)
    return img.permute(0, 2, 3, 1).cpu().numpy()


@torch.inference_mode()
def predict(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
            mean: torch.Tensor, std: torch.Tensor, limit: int | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities, labels and images of the first ``limit`` images of ``batches``.

    Args:
        net: the network in eval mode (on the batches' device).
        batches: normalized ``(x, y)`` batches.
        mean, std: the per-channel normalization (to turn ``x`` back into images).
        limit: stop after this many images (None: all).

    Returns:
        ``probs (N, K) float32``, ``labels (N,) int64``, ``images (N, H, W, C) uint8``.
    """
    probs, labels, images = [], [], []
    n = 0
    for x, y in batches:
        if limit is not None and n >= limit:
            break
        if limit is not None:
            x, y = x[: limit - n], y[: limit - n]
        probs.append(F.softmax(net(x).float(), dim=1).cpu().numpy())
        labels.append(y.cpu().numpy().astype(np.int64))
        images.append(to_uint8_images(x.float(), mean, std))
        n += len(y)
    if not probs:
        raise ValueError("no images to inspect (the split is empty)")
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(images)


def first_layer(net: nn.Module, in_chans: int) -> tuple[str, np.ndarray] | None:
    """The first conv or linear layer's weights as ``(F, C, k, k)`` images (at most 64 units).

    A conv's filters are its weights; a linear layer on flattened images (an
    MLP) has one ``C x S x S`` image per unit. None when the first such layer
    does not read the images directly (its input is not ``in_chans`` channels).

    Returns:
        ``("<name> (<kind>)", weights)`` or None.
    """
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight.detach().float().cpu()
            if w.shape[1] not in (in_chans, 1):
                return None
            kind = f"Conv2d {m.in_channels}->{m.out_channels}, {m.kernel_size[0]}x{m.kernel_size[1]}"
            return f"{name} ({kind})", w[:MAX_FILTERS].numpy()
        if isinstance(m, nn.Linear):
            side = math.isqrt(m.in_features // in_chans) if m.in_features % in_chans == 0 else 0
            if side * side * in_chans != m.in_features:
                return None
            w = m.weight.detach().float().cpu()[:MAX_FILTERS].reshape(-1, in_chans, side, side)
            return f"{name} (Linear {m.in_features}->{m.out_features}, one {side}x{side} image " \
                   "per unit)", w.numpy()
    return None


@torch.inference_mode()
def class_activation_maps(net: nn.Module, features: nn.Module, classifier: nn.Linear,
                          x: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
    """Class activation maps of ``x`` for ``classes``, upsampled to the image size.

    Args:
        net: a network whose logits are ``classifier(mean_HW(features(...)))``
            (:func:`hpstudy.models.cam_layers`), in eval mode.
        features: the module whose output ``F`` (N, C, h, w) is pooled.
        classifier: the linear layer on the pooled features.
        x: ``(N, C, H, W)`` normalized images.
        classes: ``(N,)`` the class whose map to draw for each image.

    Returns:
        ``(N, H, W)`` float32 maps, bilinear-upsampled from ``(h, w)``; the mean
        of the map before upsampling plus ``classifier.bias[k]`` is logit ``k``.
    """
    maps = raw_cams(net, features, classifier, x, classes)
    up = F.interpolate(maps[:, None], size=tuple(x.shape[-2:]), mode="bilinear",
                       align_corners=False)
    return up[:, 0].float().cpu().numpy()


def raw_cams(net: nn.Module, features: nn.Module, classifier: nn.Linear, x: torch.Tensor,
             classes: torch.Tensor) -> torch.Tensor:
    """``(N, h, w)`` maps at the features' resolution (see :func:`class_activation_maps`)."""
    seen: list[torch.Tensor] = []
    hook = features.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        net(x)
    finally:
        hook.remove()
    if not seen or seen[-1].dim() != 4:
        raise ValueError(f"{type(features).__name__} gave no (N, C, h, w) feature maps")
    feats = seen[-1].float()
    weights = classifier.weight.float()[classes.to(feats.device)]  # (N, C)
    return torch.einsum("nc,nchw->nhw", weights, feats)


def cam_examples(labels: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` image indices: the first image of each class in turn (class 0, 1, ...
    then each class's second image...), so the examples cover the classes."""
    per_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels.tolist()):
        per_class.setdefault(int(y), []).append(i)
    out: list[int] = []
    rank = 0
    while len(out) < n and any(rank < len(v) for v in per_class.values()):
        for k in sorted(per_class):
            if rank < len(per_class[k]) and len(out) < n:
                out.append(per_class[k][rank])
        rank += 1
    return np.asarray(out, dtype=np.int64)
