"""Which training images train and which validate, decided from the labels alone.

:func:`plan_split` is the one place that turns ``data.val_split`` and
``data.subset`` into index sets. The data module calls it when it loads a
dataset; :func:`hpstudy.data.check_dataset` calls it on labels read cheaply
from the files (a labels file, a directory listing) so that a split that
cannot work is refused before a study writes anything or loads any pixels.

Rules (each broken rule is a :class:`DatasetError` naming the field):

* ``val_split`` is a fraction (< 1) or a count (>= 1) of the training
  images, drawn per class in proportion (seeded); ``0`` means no validation
  split at all (every training image trains).
* With a validation split, every class keeps at least one training and one
  validation image: a class with a single image, or fewer validation (or
  training) images than classes, is refused rather than silently left out.
* ``subset`` keeps that many training images, stratified, at least one per
  class; it cannot exceed the training images there are.
* Datasets whose protocol fixes validation (SVHN with ``extra``, an
  ImageFolder with ``val/``) ignore ``val_split``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._registry import DatasetError


def _allocate(counts: torch.Tensor, n_take: int, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Per-class counts in proportion to ``counts`` that add up to ``n_take``, within [low, high].

    Largest-remainder first (the split every earlier hpstudy version drew),
    then, only where a bound is broken, single images move between classes,
    taken from those furthest above their quota and given to those furthest
    below it. The caller guarantees ``low.sum() <= n_take <= high.sum()``.
    """
    quota = counts.double() * n_take / counts.sum()
    take = quota.floor().long()
    rest = n_take - int(take.sum())
    if rest > 0:
        order = torch.argsort(quota - take.double(), descending=True)[:rest]
        take[order] += 1
    take = torch.maximum(torch.minimum(take, high), low)
    diff = n_take - int(take.sum())
    while diff != 0:
        sign = 1 if diff > 0 else -1
        room = take < high if sign > 0 else take > low
        k = min(abs(diff), int(room.sum()))
        if k == 0:
            raise ValueError(f"cannot take {n_take} of {int(counts.sum())} within the per-class bounds")
        score = (sign * (quota - take.double())).masked_fill(~room, float("-inf"))
        take[torch.argsort(score, descending=True)[:k]] += sign
        diff -= sign * k
    return take


def stratified_split(
    y: torch.Tensor, n_val: int, seed: int, *, min_train: int = 0, min_val: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val) with ``n_val`` samples drawn per class in proportion.

    Args:
        y: int labels.
        n_val: how many samples the second part gets.
        seed: seed of the draw (a CPU generator: the same split on every machine).
        min_train: at least this many samples of every class stay in the first part.
        min_val: at least this many samples of every class go to the second part
            (fewer where a class has fewer).

    Returns:
        ``(train, val)``: the first part in a seeded random order, the second sorted.

    Raises:
        ValueError: the minimums cannot be met.
    """
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(y, return_counts=True)
    low = counts.clamp(max=min_val)
    high = counts - min_train
    if (high < low).any() or int(low.sum()) > n_val or int(high.sum()) < n_val:
        raise ValueError(f"cannot draw {n_val} of {len(y)} samples keeping {min_train} per class "
                         f"in one part and {min_val} in the other")
    take = _allocate(counts, n_val, low, high)
    train_idx, val_idx = [], []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        val_idx.append(idx[:k])
        train_idx.append(idx[k:])
    tr, va = torch.cat(train_idx), torch.cat(val_idx)
    return tr[torch.randperm(len(tr), generator=g)], va.sort().values


@dataclass(frozen=True)
class SplitPlan:
    """Index sets of one data configuration.

    Attributes:
        train: indices into the dataset's training split that train.
        val: indices into the training split carved for validation (empty with
            ``val_split: 0``), or ``None`` when the dataset fixes validation.
        fixed_val: indices into the dataset's own validation split, or ``None``.
        protocol: how validation was chosen, in words (``data.val_protocol``).
    """

    train: torch.Tensor
    val: torch.Tensor | None
    fixed_val: torch.Tensor | None
    protocol: str

    @property
    def n_val(self) -> int:
        """Validation images (0 without a validation split)."""
        idx = self.fixed_val if self.fixed_val is not None else self.val
        return 0 if idx is None else len(idx)


def _class(c: int, class_names: list[str] | None) -> str:
    if class_names is not None and 0 <= c < len(class_names):
        return f"class {c} ('{class_names[c]}')"
    return f"class {c}"


def _carve(
    y: torch.Tensor, val_split: float, seed: int, dataset: str, class_names: list[str] | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(train, val, protocol) of a validation split carved from labels ``y``."""
    n = len(y)
    if val_split == 0:
        return torch.arange(n), torch.zeros(0, dtype=torch.long), (
            f"none (val_split 0: all {n} train images train)")
    n_val = round(val_split * n) if val_split < 1 else int(val_split)
    field = f"data.val_split={val_split:g}"
    if n_val <= 0:
        raise DatasetError(f"{field} leaves no validation images out of the {n} training images "
                           f"of {dataset} (0 means no validation split)")
    if n_val >= n:
        raise DatasetError(f"{field} leaves no training images out of the {n} of {dataset}")
    classes, counts = torch.unique(y, return_counts=True)
    k = len(classes)
    if int(counts.min()) < 2:
        c = int(classes[torch.argmin(counts)])
        raise DatasetError(f"{field}: {_class(c, class_names)} of {dataset} has a single training "
                           f"image, so it cannot be in both training and validation")
    if n_val < k:
        raise DatasetError(f"{field} gives {n_val} validation images for the {k} classes of "
                           f"{dataset}; every class needs one (use at least {k})")
    if n - n_val < k:
        raise DatasetError(f"{field} leaves {n - n_val} training images for the {k} classes of "
                           f"{dataset}; every class needs one (use at most {n - k})")
    train, val = stratified_split(y, n_val, seed, min_train=1, min_val=1)
    return train, val, f"stratified {n_val} of {n} train images, seed {seed}"


def plan_split(
    train_y: torch.Tensor,
    fixed_val_y: torch.Tensor | None = None,
    *,
    val_split: float = 0.2,
    subset: int | None = None,
    seed: int = 0,
    dataset: str = "the dataset",
    class_names: list[str] | None = None,
    fixed_protocol: str = "fixed by the dataset",
) -> SplitPlan:
    """Decide which training images train and which validate.

    Args:
        train_y: labels of the dataset's training split.
        fixed_val_y: labels of the dataset's own validation split, when its
            protocol fixes one (then ``val_split`` is ignored).
        val_split: fraction (< 1) or count (>= 1) carved for validation; 0: none.
        subset: keep only this many training images (stratified); validation
            shrinks to about a quarter of it, at least one image per class.
        seed: the split seed (``data.seed``).
        dataset: name for the error messages.
        class_names: names for the error messages.
        fixed_protocol: the dataset's own words for its fixed validation set.

    Raises:
        DatasetError: one line naming ``data.val_split`` or ``data.subset``.
    """
    if fixed_val_y is not None:
        train, carved, fixed = torch.arange(len(train_y)), None, torch.arange(len(fixed_val_y))
        protocol = fixed_protocol
    else:
        train, carved, protocol = _carve(train_y, val_split, seed, dataset, class_names)
        fixed = None
    if subset is None:
        return SplitPlan(train, carved, fixed, protocol)
    after = " left after the validation split" if carved is not None and len(carved) else ""
    if subset > len(train):
        raise DatasetError(f"data.subset={subset} is more than the {len(train)} training images "
                           f"of {dataset}{after}")
    ty = train_y[train]
    k = len(torch.unique(ty))
    if subset < k:
        raise DatasetError(f"data.subset={subset} is fewer than the {k} classes of {dataset}; "
                           f"every class needs a training image")
    if subset == len(train):
        return SplitPlan(train, carved, fixed, protocol)
    # stratified subsets: tiny runs still see every class
    _, keep = stratified_split(ty, subset, seed, min_val=1)
    train = train[keep]
    vy = fixed_val_y[fixed] if fixed is not None else train_y[carved]
    n_val = len(vy)
    if n_val:
        # stay proportionate: about a quarter of the subset, one image per class at least
        n_val = max(len(torch.unique(vy)), min(len(vy), subset // 4))
        if n_val < len(vy):
            _, keep_val = stratified_split(vy, n_val, seed, min_val=1)
            if fixed is not None:
                fixed = fixed[keep_val]
            else:
                carved = carved[keep_val]
    return SplitPlan(train, carved, fixed, protocol + f"; subset: {subset} train / {n_val} val images")
