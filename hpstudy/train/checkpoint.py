"""Checkpoints of a finished fit: plain data that ``torch.load(weights_only=True)`` reads.

Built where the weights are (the trial's own process, rank 0 under DDP) and
logged by the process that talks to MLflow (:mod:`hpstudy.track.registry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def checkpoint_from_fit(result: Any, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint of a finished fit: weights, rebuild arguments, two inputs.

    Args:
        result: a :class:`hpstudy.train.FitResult` whose ``module`` holds the
            best epoch's weights and whose ``datamodule`` is prepared.
        meta: extra facts kept with the weights (study, trial number, value...).

    Returns:
        Plain data that ``torch.load(..., weights_only=True)`` reads back:
        ``state_dict`` (CPU tensors), ``model`` (``create_model`` arguments),
        ``example`` (two normalized validation images) and ``meta``.
    """
    module, dm = result.module, result.datamodule
    hp = module.hparams
    model = {"name": hp["model"]["arch"], "num_classes": int(hp["num_classes"]),
             "in_chans": int(hp["in_chans"]), "input_size": int(hp["input_size"]),
             **module.model_cfg.kwargs()}
    # two inputs as the network sees them: validation images, else test ones (val_split: 0)
    split = "val" if dm.has_val else ("test" if dm.has_test else "train")
    x, _ = next(iter(dm.dataloader(split)))
    example = x[:2].detach().cpu().float().clone()
    if example.shape[0] < 2:  # a batch of 2 keeps the exported batch dimension dynamic
        example = example.repeat(2, 1, 1, 1)[:2]
    info = {
        "best_epoch": result.best_epoch,
        "monitor": result.monitor,
        "value": result.value,
        "num_params": result.num_params,
        "mean": [float(v) for v in dm.mean],
        "std": [float(v) for v in dm.std],
        "input_size": int(dm.input_size),
        "class_names": [str(c) for c in (dm.class_names or [])],
        **(meta or {}),
    }
    return {"state_dict": {k: v.detach().cpu().clone() for k, v in module.net.state_dict().items()},
            "model": model, "example": example, "meta": info}


def save_checkpoint(result: Any, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write :func:`checkpoint_from_fit` to ``path`` (a child process hands it to its parent)."""
    path = Path(path)
    torch.save(checkpoint_from_fit(result, meta), path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU with ``weights_only=True`` (no code is unpickled)."""
    return torch.load(path, map_location="cpu", weights_only=True)
