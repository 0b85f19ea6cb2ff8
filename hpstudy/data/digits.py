"""scikit-learn's digits: 1,797 real 8x8 grey images of handwritten digits.

Bundled with scikit-learn, so it is hpstudy's offline default. The dataset has
no official test split; a fixed, stratified 20% is held out as the test split
(seed 0, independent of ``data.seed``) so test numbers stay comparable across
studies.
"""

from __future__ import annotations

import torch

from ._registry import DatasetMeta, RawDataset, register_dataset

TEST_FRACTION = 0.2  # fixed held-out test split; never used for selection


def _describe(**_: object) -> DatasetMeta:
    # handwritten digits: a mirrored 2, 3 or 7 is no digit, so no flips
    return DatasetMeta(num_classes=10, in_chans=1, image_size=8, flip_invariant=False)


def _labels(root: str) -> tuple[torch.Tensor, None]:
    return load_digits(root).train_y, None  # the whole set is 1,797 tiny images: just load it


@register_dataset("digits", describe=_describe, labels=_labels)
def load_digits(root: str, download: bool = False) -> RawDataset:
    """Load sklearn digits as uint8 images (pixel values 0..16 scaled to 0..255)."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    bunch = _load()
    x = torch.from_numpy((bunch.images * (255.0 / 16.0)).round()).to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(bunch.target).long()
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(idx, test_size=TEST_FRACTION, stratify=y.numpy(), random_state=0)
    tr, te = torch.from_numpy(tr), torch.from_numpy(te)
    return RawDataset(
        name="digits",
        num_classes=10,
        train_x=x[tr],
        train_y=y[tr],
        test_x=x[te],
        test_y=y[te],
        class_names=[str(i) for i in range(10)],
        info={
            "cache": "none (bundled with scikit-learn)",
            "test_protocol": f"stratified {TEST_FRACTION:.0%} held out, seed 0",
        },
    )
