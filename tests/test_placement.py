"""Placement of parallel workers on GPUs and cores: a plain function tested with made-up counts,
then real worker processes on the CPU (two trials at a time on the one 'device')."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest
from conftest import tiny_study
from mlflow import MlflowClient
from optuna.trial import TrialState

from hpstudy.config import ConfigError, from_dict
from hpstudy.search import get_storage
from hpstudy.search.placement import devices_per_trial, place, plan_workers

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- pure function
def test_one_gpu_trials_round_robin_then_share_up_to_k():
    ps = place(None, 2, trials_per_gpu=2, devices_per_trial=1, n_cpus=16)
    assert [p.gpus for p in ps] == [(0,), (1,), (0,), (1,)]  # every GPU busy before any doubles
    assert [p.sharing for p in ps] == [2, 2, 2, 2] and {p.threads for p in ps} == {4}
    env = ps[3].env
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["OMP_NUM_THREADS"] == "4" == env["MKL_NUM_THREADS"]
    assert env["HPSTUDY_PLACEMENT"] == "GPU 1 (shared by 2 trials), 4 threads"
    # three workers on two GPUs at k=2: GPU 0 holds two, GPU 1 one
    assert [(p.gpus, p.sharing) for p in place(3, 2, 2, 1, 8)] == [((0,), 2), ((1,), 1),
                                                                   ((0,), 2)]


def test_wide_trials_own_adjacent_gpus_and_ignore_trials_per_gpu():
    ps = place(None, 8, trials_per_gpu=4, devices_per_trial=3, n_cpus=16)
    assert [p.gpus for p in ps] == [(0, 1, 2), (3, 4, 5)]  # 8 // 3 = 2; GPUs 6, 7 stay free
    assert ps[0].env["CUDA_VISIBLE_DEVICES"] == "0,1,2" and ps[0].sharing == 1


def test_auto_devices_split_the_gpus_between_workers():
    assert [p.gpus for p in place(None, 4, 1, None, 8)] == [(0, 1, 2, 3)]
    assert [p.gpus for p in place(2, 4, 1, None, 8)] == [(0, 1), (2, 3)]
    # more workers than GPUs: one each, shared as one-GPU trials (k permitting)
    assert [p.gpus for p in place(4, 2, 2, None, 8)] == [(0,), (1,), (0,), (1,)]


def test_cpu_is_one_device_whose_cores_are_shared():
    assert [p.threads for p in place(None, 0, trials_per_gpu=2, n_cpus=16)] == [8, 8]
    assert place(None, 0, n_cpus=16)[0].threads == 16  # the default: one worker
    ps = place(4, 0, n_cpus=2)  # past the cores: one thread each, never refused on the CPU
    assert [p.threads for p in ps] == [1, 1, 1, 1]
    assert "CUDA_VISIBLE_DEVICES" not in ps[0].env and ps[0].describe() == "CPU, 1 thread"
    assert place(2, 0, 1, 2, 8)[0].threads == 2  # DDP on the CPU: 2 ranks x 2 workers


@pytest.mark.parametrize(("n_gpus", "k", "d"), list(itertools.product(
    [0, 1, 2, 4, 8], [1, 2, 4], [1, 2, 3, None])))
def test_no_gpu_is_ever_oversubscribed(n_gpus: int, k: int, d: int | None):
    """Every worker count from 1 to past the capacity: placed within limits, or refused."""
    for n in [None, *range(1, 2 * max(1, n_gpus) * k + 2)]:
        try:
            ps = place(n, n_gpus, k, d, n_cpus=16)
        except ConfigError as e:
            # refused only when it cannot fit, naming what to change
            width = d or 1
            assert n_gpus > 0 and (width > n_gpus or (n or 0) > (
                n_gpus * k if width == 1 else n_gpus // width)), (n, str(e))
            assert e.source in ("--workers", "train.devices")
            continue
        assert len(ps) == (n if n is not None else len(ps)) and [p.index for p in ps] == list(
            range(len(ps)))
        assert all(p.threads >= 1 for p in ps)
        if n_gpus == 0:
            assert all(p.gpus == () for p in ps)
            continue
        load = Counter(g for p in ps for g in p.gpus)
        assert set(load) <= set(range(n_gpus))
        wide = [p for p in ps if len(p.gpus) > 1]
        if wide or d not in (1, None):
            assert max(load.values()) == 1  # several-GPU trials: GPUs of their own
            assert all(len(p.gpus) == (d or len(p.gpus)) for p in ps)
        else:
            assert max(load.values()) <= k  # one-GPU trials: at most k per GPU
            assert max(load.values()) - min(load.get(g, 0) for g in range(n_gpus)) <= 1
            assert all(p.sharing == load[p.gpus[0]] for p in ps)
        if n is None:  # the default fills every slot
            assert len(ps) == (n_gpus * k if (d or 1) == 1 and d is not None
                               else n_gpus // d if d else 1)


def test_refusals_name_the_flag_and_the_numbers():
    with pytest.raises(ConfigError) as e:
        place(9, 4, 2, 1, 16)
    assert str(e.value) == ("--workers: 9 workers need 9 trial slots; 4 GPUs x "
                            "search.trials_per_gpu 2 give 8: raise --trials-per-gpu or run "
                            "fewer workers")
    with pytest.raises(ConfigError, match="train.devices: a trial of 3 GPUs does not fit on "
                                          "this machine's 2"):
        place(None, 2, 1, 3, 16)
    with pytest.raises(ConfigError, match="3 workers of 2 GPUs each need 6 GPUs; this machine "
                                          "has 4"):
        place(3, 4, 1, 2, 16)


def test_devices_per_trial_and_plan_workers():
    cfg = from_dict(tiny_study("p"))
    assert devices_per_trial(cfg) == 1
    for devices, want in [(2, 2), (-1, None), ("auto", None), ("0,1", 2), ([1], 2), ("3", 3)]:
        assert devices_per_trial(cfg.concrete({"train.devices": devices})) == want
    per2 = cfg.concrete({"search.trials_per_gpu": 2})
    assert len(plan_workers(per2, n_gpus=4, n_cpus=8)) == 8
    assert len(plan_workers(per2, n_gpus=4, n_cpus=8, limit=3)) == 3  # no idle workers
    assert len(plan_workers(per2, 5, n_gpus=4, n_cpus=8, limit=3)) == 5  # asked: kept
    with pytest.raises(ConfigError, match="^search.workers: 9 workers"):
        plan_workers(per2.concrete({"search.workers": 9}), n_gpus=4, n_cpus=8)


# ----------------------------------------------------------------- real workers
@pytest.mark.dist
def test_two_trials_per_device_on_the_cpu_finish_exactly_n(stores, write_study):
    """``--trials-per-gpu 2`` without ``--workers``: two workers share the CPU, exactly 4 trials."""
    path = write_study(tiny_study("packed", train={"max_epochs": 2}))
    out = subprocess.run(
        [sys.executable, "-m", "hpstudy", "run", str(path), "--trials-per-gpu", "2",
         "--n-trials", "4", "--no-report", "-q", "--storage", stores["storage"],
         "--tracking-uri", stores["tracking_uri"]],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    trials = optuna.load_study(study_name="packed",
                               storage=get_storage(stores["storage"])).get_trials()
    assert [t.number for t in trials] == list(range(4))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # two at a time: some trial started before another one ended
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))
    client = MlflowClient(stores["tracking_uri"])
    exp = client.get_experiment_by_name("packed")
    runs = client.search_runs([exp.experiment_id], "tags.`hpstudy.kind` = 'trial'")
    assert len(runs) == 4
    want = place(2, 0, n_cpus=os.cpu_count() or 1)[0].describe()  # "CPU, 1 thread" on 2 cores
    assert {r.data.tags["hpstudy.placement"] for r in runs} == {want}
    parent = client.search_runs([exp.experiment_id], "tags.`hpstudy.kind` = 'study'")[0]
    assert parent.data.metrics["n_workers"] == 2
    # nothing about GPUs is recorded for a CPU run
    assert not [k for r in runs for k in r.data.metrics if k.startswith(("system/", "gpu_"))]
