"""The lean training path keeps its results: metrics, tracking order, garbage, SQLite settings."""

from __future__ import annotations

import gc
import sqlite3
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from conftest import tiny_study
from mlflow import MlflowClient
from torchmetrics.classification import MulticlassAccuracy

from hpstudy.config import from_dict
from hpstudy.search import run_study
from hpstudy.track import Tracker
from hpstudy.train import fit, release_memory
from hpstudy.train.module import EpochSums, MeanLoss


def test_epoch_sums_equal_torchmetrics_over_uneven_batches():
    gen = torch.Generator().manual_seed(0)
    sums, acc, mean = EpochSums(), MulticlassAccuracy(num_classes=5, average="micro"), MeanLoss()
    for n in (7, 16, 3):
        logits = torch.randn(n, 5, generator=gen)
        y = torch.randint(0, 5, (n,), generator=gen)
        loss = nn.functional.cross_entropy(logits, y)
        sums.update(loss, logits, y)
        acc.update(logits, y)
        mean.update(loss, n)
    assert sums.updated
    loss, accuracy = sums.compute(torch.device("cpu"))
    assert loss.item() == pytest.approx(mean.compute().item(), rel=1e-6)
    assert accuracy.item() == pytest.approx(acc.compute().item(), rel=1e-6)
    assert not sums.updated  # reset by compute


def test_epoch_sums_propagate_nan_and_are_nan_without_batches():
    sums = EpochSums()
    logits, y = torch.zeros(2, 3), torch.tensor([0, 1])
    sums.update(torch.tensor(float("nan")), logits, y)
    sums.update(torch.tensor(1.0), logits, y)
    loss, _ = sums.compute(torch.device("cpu"))
    assert torch.isnan(loss)  # a diverged batch makes the epoch's loss NaN
    loss, acc = EpochSums().compute(torch.device("cpu"))
    assert torch.isnan(loss) and torch.isnan(acc)


def test_module_attributes_still_register_parameters_and_plain_values():
    from hpstudy.train.module import ClassifierModule

    m = ClassifierModule({"arch": "mlp", "hidden": [4]}, {}, num_classes=3, in_chans=1,
                         input_size=8)
    m.note = "a"
    m.note = "b"  # a plain attribute replaced: the fast path
    assert m.note == "b" and "note" not in dict(m.named_parameters())
    m.extra = nn.Parameter(torch.zeros(2))
    assert "extra" in dict(m.named_parameters())
    m.training = False
    assert not m.training


def test_fit_history_is_the_same_with_lightning_logging_on_or_off(tmp_path: Path):
    # early stopping reads Lightning's logged metrics: that fit logs through Lightning,
    # the plain one does not; the recorded curves must not depend on it
    base = tiny_study("lean", train={"max_epochs": 2, "optimizer": "adam", "lr": 0.01})
    plain = fit(from_dict(base))
    logged = fit(from_dict({**base, "train": {**base["train"],
                                              "early_stopping": {"patience": 5}}}))
    assert [r["epoch"] for r in plain.history] == [1, 2]
    for a, b in zip(plain.history, logged.history, strict=True):
        for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert a[k] == pytest.approx(b[k], rel=1e-6), k


def test_background_epoch_writes_arrive_in_order_before_the_run_ends(tmp_path: Path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "bg")
    run_id = tracker.start_run("r", {}, {})
    for epoch in range(1, 6):
        tracker.log_epoch(run_id, {"epoch": epoch, "val_acc": epoch / 10, "train_loss": 1.0})
    tracker.end_run(run_id, "COMPLETE")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    hist = client.get_metric_history(run_id, "val_acc")
    assert [(m.step, m.value) for m in hist] == [(e, e / 10) for e in range(1, 6)]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_failed_background_write_is_raised_once(tmp_path: Path):
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "bg")
    tracker.log_epoch("0" * 32, {"epoch": 1, "val_acc": 0.5})  # no such run
    with pytest.raises(Exception, match="0" * 32):
        tracker.flush()
    tracker.flush()  # raised once; nothing pending


def test_release_memory_still_frees_later_cycles():
    release_memory()  # collects, then freezes what survived

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made after the freeze
    ref = weakref.ref(a)
    del a, b
    release_memory()
    assert ref() is None
    assert gc.get_freeze_count() > 0


def test_study_stores_use_wal(stores, tmp_path: Path):
    run_study(from_dict(tiny_study("wal", search={"n_trials": 1})), progress=False, **stores)
    for url in stores.values():
        path = url.removeprefix("sqlite:///")
        con = sqlite3.connect(path)
        try:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal", path
        finally:
            con.close()


def test_other_sqlite_databases_in_the_process_keep_their_journal(stores, tmp_path: Path):
    """A program using hpstudy and its own SQLite database through SQLAlchemy keeps its settings."""
    import sqlalchemy

    run_study(from_dict(tiny_study("walmine", search={"n_trials": 1})), progress=False, **stores)
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/mine.db")
    try:
        with engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
    finally:
        engine.dispose()


def test_a_tracker_copied_into_another_process_writes_its_epochs_before_returning(tmp_path: Path):
    """A DDP rank gets a pickled copy of the tracker and may end with os._exit: no thread."""
    import multiprocessing as mp
    import pickle

    from mlflow import MlflowClient

    from hpstudy.track.tracker import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri, "copied")
    run_id = tracker.start_run("r", {}, {})
    tracker.log_epoch(run_id, {"epoch": 1, "val_acc": 0.5})  # the parent's writer exists now
    tracker.flush(run_id)
    copy = pickle.loads(pickle.dumps(tracker))  # what spawning a rank does
    assert copy._writer is None and copy._pending == []
    ctx = mp.get_context("fork")
    p = ctx.Process(target=_log_then_exit_at_once, args=(tracker, run_id))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    steps = [m.step for m in MlflowClient(uri).get_metric_history(run_id, "val_acc")]
    assert sorted(steps) == [1, 2]


def _log_then_exit_at_once(tracker, run_id: str) -> None:
    import os

    tracker.log_epoch(run_id, {"epoch": 2, "val_acc": 0.6})
    os._exit(0)  # as a forked rank ends: no thread is waited for
