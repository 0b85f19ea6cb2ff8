"""The thesis reproduction: the 36 cells as data, their configs, and ``hpstudy reproduce``.

The reference table (``studies/thesis/table_4_6.csv``) is checked against the
study files cell by cell; ``hpstudy reproduce --smoke`` runs through the real
CLI on generated files in the datasets' formats with a real MLflow store.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli
from mlflow import MlflowClient

from hpstudy.config import ConfigError, load_study
from hpstudy.names import REPRODUCTION_EXPERIMENT
from hpstudy.report.reproduction import ReproductionInfo, _reproduction_info
from hpstudy.reproduce import (
    cell_config,
    load_table,
    plan_reproduction,
    recipe_config,
    select_cells,
    thesis_dir,
)
from hpstudy.reproduce.run import our_params, result_row

CELLS = load_table()
BY_ID = {c.id: c for c in CELLS}
STUDY_DIR = thesis_dir()
# the 17 cells studies/thesis lacked before (the list)
ADDED = [f"{a}-{d}" for a in ("nin", "bn_nin")
         for d in ("mnist", "cifar10", "cifar10+", "cifar100", "cifar100+")] + [
    "bn_vgg15-cifar100", "bn_vgg15-cifar100+", "densenet40_12-cifar100",
    "densenet40_12-cifar100+", "densenet40_12-svhn", "densenet_bc100_12-cifar100",
    "densenet_bc100_12-cifar100+"]


# ------------------------------------------------------------------ the table
def test_the_table_has_the_36_cells_of_table_4_6():
    assert len(CELLS) == 36 and len(BY_ID) == 36
    assert len({(c.arch, c.dataset) for c in CELLS}) == 36
    assert {c.dataset for c in CELLS} == {"mnist", "cifar10", "cifar10+", "cifar100",
                                          "cifar100+", "svhn"}
    assert set(ADDED) <= set(BY_ID) and len(ADDED) == 17
    # spot checks against the thesis: error %, parameters as printed, source
    assert (BY_ID["baseline_cnn-mnist"].error_pct, BY_ID["baseline_cnn-mnist"].params) == \
        (0.6, 682_000)
    assert BY_ID["wrn28_10-cifar10+"].error_pct == 4.57
    assert BY_ID["densenet_bc100_12-cifar100+"].params == 768_000
    assert all(c.source == "thesis Table 4.6" for c in CELLS)
    # the inconsistencies inside the thesis are documented, not copied
    assert "prints depth 38" in BY_ID["wrn40_4-cifar10+"].note
    assert BY_ID["wrn40_4-cifar10+"].depth == 40 and BY_ID["wrn28_10-cifar10+"].depth == 28
    assert "0.8M" in BY_ID["densenet_bc100_12-cifar10"].note
    assert "Table 4.2" in BY_ID["nin-cifar10"].note
    for c in CELLS:
        if c.arch.startswith("densenet") and c.dataset.startswith("cifar100"):
            assert "10-class parameter count" in c.note


def test_every_cell_maps_to_one_enqueued_recipe_and_every_recipe_to_a_cell():
    mapped = {(c.study, c.recipe) for c in CELLS}
    assert len(mapped) == 36
    enqueued = set()
    for path in sorted(STUDY_DIR.glob("*.yaml")):
        cfg = load_study(path)
        enqueued |= {(path.stem, i) for i in range(len(cfg.search.enqueue))}
    assert mapped == enqueued


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.id)
def test_the_recipe_of_a_cell_follows_its_protocol(cell):
    cfg = recipe_config(cell)
    assert cfg.model.arch == cell.arch
    assert cfg.data.dataset == cell.base_dataset
    assert cfg.data.augmentation == ("standard" if cell.augmented else "none")
    assert cfg.train.weight_decay_on == "weights"  # the thesis decays kernels only
    assert cfg.train.optimizer == "nesterov" and cfg.train.momentum == 0.9
    if cell.base_dataset == "svhn":
        assert cfg.data.options.get("svhn_extra") is True
    if cell.arch.startswith("densenet"):  # dropout only on the sets without augmentation
        assert cfg.model.drop_rate == (0.0 if cell.augmented else 0.2)
    if cell.arch in ("nin", "bn_nin"):
        variant = {"mnist": "mnist", "svhn": "svhn"}.get(cell.base_dataset, "cifar")
        assert cfg.model.kwargs()["variant"] == variant
        assert cfg.model.init == ("normal" if cell.arch == "nin" else "he_normal")
    # our parameter count is the paper's, give or take (CIFAR-100 rows print 10-class counts)
    assert abs(our_params(cfg) / cell.params - 1) < 0.07


# ------------------------------------------------------------------ configs
def test_cell_config_is_the_final_protocol():
    cfg = cell_config(BY_ID["nin-cifar10"], seed=2)
    assert (cfg.data.val_split, cfg.train.select, cfg.train.evaluate_test) == (0, "last", True)
    assert not cfg.train.early_stopping.enabled
    assert (cfg.train.seed, cfg.data.seed) == (2, 2)
    assert cfg.train.max_epochs == 260 and cfg.train.scheduler.milestones == [200, 230]
    svhn = cell_config(BY_ID["densenet40_12-svhn"])  # SVHN keeps its fixed validation
    assert svhn.data.options["svhn_extra"] and svhn.data.val_split > 0
    assert svhn.train.select == "last"


def test_epochs_scale_shortens_the_schedule_alike():
    nin = cell_config(BY_ID["nin-mnist"], epochs_scale=0.1)  # 60 epochs, /2 at 40, /5 at 50
    assert nin.train.max_epochs == 6 and nin.train.scheduler.milestones == [4, 5]
    tiny = cell_config(BY_ID["nin-mnist"], epochs_scale=0.02)  # milestones stay increasing
    assert tiny.train.max_epochs == 1 and tiny.train.scheduler.milestones == [1, 2]
    vgg = cell_config(BY_ID["bn_vgg15-cifar10"], epochs_scale=0.1)  # /2 every 25 of 250
    assert (vgg.train.max_epochs, vgg.train.scheduler.step_size) == (25, 2)
    dense = cell_config(BY_ID["densenet40_12-cifar10"], epochs_scale=0.1)  # fractions stay
    assert dense.train.scheduler.milestones == [0.5, 0.75]


def test_select_cells_by_id_and_pattern():
    assert [c.id for c in select_cells(CELLS, ["nin-mnist"])] == ["nin-mnist"]
    assert len(select_cells(CELLS, ["preact_resnet*"])) == 8
    assert [c.id for c in select_cells(CELLS, ["*-svhn"])] == [
        "nin-svhn", "bn_nin-svhn", "densenet40_12-svhn"]
    assert len(select_cells(CELLS, None)) == 36
    with pytest.raises(ConfigError) as e:
        select_cells(CELLS, ["nin-cifar11"])
    assert e.value.field == "nin-cifar11" and "did you mean nin-cifar10" in e.value.message


def test_result_row_verdict_only_for_reproductions():
    cell = BY_ID["baseline_cnn-mnist"]  # paper: 0.6%
    plan = plan_reproduction([cell], seeds=2)
    row = result_row(cell, plan, [0.5, 0.7], ["a", "b"])
    assert row["kind"] == "reproduction" and row["n_seeds"] == 2
    assert row["error_pct"] == pytest.approx(0.6) and row["error_std"] == pytest.approx(0.1414, 1e-3)
    assert row["diff_points"] == pytest.approx(0.0, abs=1e-9) and row["within_0_5"] == "yes"
    assert result_row(cell, plan, [1.2])["within_0_5"] == "no"
    assert result_row(cell, plan, [])["error_pct"] is None
    short = plan_reproduction([cell], epochs_scale=0.5)
    assert result_row(cell, short, [0.6])["within_0_5"] == "" and short.kind == "shortened"
    # --set that changes what is trained makes the row "modified"; where it runs does not
    assert plan_reproduction([cell], overrides={"train.max_epochs": 1}).kind == "modified"
    assert plan_reproduction([cell], overrides={"train.accelerator": "cpu"}).kind == \
        "reproduction"


def test_reproduction_info_keeps_measured_finite_rows():
    df = pd.DataFrame([
        {"cell": "a", "kind": "smoke", "paper_error_pct": 0.6, "error_pct": 90.0,
         "error_std": 0.0, "n_seeds": 1},
        {"cell": "b", "kind": "reproduction", "paper_error_pct": 5.0, "error_pct": None,
         "error_std": None, "n_seeds": 0},
        {"cell": "c", "kind": "reproduction", "paper_error_pct": 7.0, "error_pct": 7.2,
         "error_std": float("nan"), "n_seeds": 1},
    ])
    assert _reproduction_info(df) == ReproductionInfo(
        cells=("a", "b", "c"), paper=(0.6, 5.0, 7.0),
        measured=(("a", 90.0, 0.0, "smoke"), ("c", 7.2, 0.0, "reproduction")))
    with pytest.raises(ValueError, match="error_pct"):
        _reproduction_info(df.drop(columns=["error_pct"]))


# ------------------------------------------------------------------ the command
def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_reproduce_smoke_two_cells_end_to_end(tmp_path: Path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["reproduce", "baseline_cnn-mnist", "bn_nin-svhn", "--smoke", "--tracking-uri", uri,
            "--smoke-data", str(tmp_path / "data"), "--set", "train.num_threads=1"]
    code, out, err = run_cli(*args, monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err + out
    assert "0 already finished, 2 to run" in out
    assert "note         smoke rows: not reproductions of the thesis" in out

    rows = _read_csv(tmp_path / "dashboards" / "reproduction" / "results.csv")
    assert [r["cell"] for r in rows] == ["baseline_cnn-mnist", "bn_nin-svhn"]
    for r in rows:
        assert r["kind"] == "smoke" and r["within_0_5"] == ""  # never a reproduction
        assert r["n_seeds"] == "1" and 0 <= float(r["error_pct"]) <= 100
        assert math.isclose(float(r["diff_points"]),
                            float(r["error_pct"]) - float(r["paper_error_pct"]), abs_tol=1e-3)
        assert int(r["params"]) > 0 and r["paper_params"] in ("682000", "2000000")
    assert rows[0]["epochs"] == "1" and rows[0]["recipe_epochs"] == "30"
    page = (tmp_path / "dashboards" / "reproduction" / "index.html").read_text()
    assert "smoke rows ran on generated data" in page and "ours (smoke)" in page
    assert "bn_nin-svhn" in page and "not reproductions" in page

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(REPRODUCTION_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["baseline_cnn-mnist-seed0",
                                                     "bn_nin-svhn-seed0"]
    for run in runs:
        t = run.data.tags
        assert (t["hpstudy.kind"], t["hpstudy.smoke"], t["hpstudy.seed"]) == \
            ("reproduction", "true", "0")
        assert t["hpstudy.cell"] in ("baseline_cnn-mnist", "bn_nin-svhn")
        assert run.info.status == "FINISHED" and "test_acc" in run.data.metrics
        assert run.data.params["train.select"] == "last"
        assert run.data.params["train.weight_decay_on"] == "weights"
    svhn = next(r for r in runs if r.data.tags["hpstudy.cell"] == "bn_nin-svhn")
    assert "from train + 1/class from extra" in svhn.data.params["data.val_protocol"]

    # rerunning resumes: nothing is trained again, the same table comes out
    code, out, err = run_cli(*args, monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    assert "2 already finished, 0 to run" in out
    assert len(client.search_runs([exp.experiment_id])) == 2
    # --no-train without --smoke: no real run exists, every row says so
    code, out, err = run_cli("reproduce", "baseline_cnn-mnist", "--no-train", "--tracking-uri",
                             uri, monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    assert "| baseline_cnn-mnist | 0.60 | not run yet | 0 |" in out
    assert _read_csv(tmp_path / "dashboards" / "reproduction" / "results.csv")[0]["kind"] == \
        "reproduction"


@pytest.mark.parametrize("args,fragment", [
    (["reproduce", "nin-cifar11"], "error: CELL: nin-cifar11: no cell matches; did you mean"),
    (["reproduce", "nin-mnist", "--epochs-scale", "1.5"], "--epochs-scale: must be in (0, 1]"),
    (["reproduce", "nin-mnist", "--set", "train.lr=-1"], "train.lr"),
    (["reproduce", "nin-mnist", "--set", "data.root=/nonexistent"], "mnist"),
])
def test_reproduce_bad_input_is_exit_2(tmp_path: Path, monkeypatch, capsys, args, fragment):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code, _, err = run_cli(*args, "--tracking-uri", uri, monkeypatch=monkeypatch, cwd=tmp_path,
                           capsys=capsys)
    assert code == 2 and fragment in err, err
    assert not (tmp_path / "dashboards").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_reproduce_smoke_every_cell(tmp_path: Path, monkeypatch, capsys):
    """All 36 cells, 2% of their epochs on generated data: 4.5 minutes on 2 idle CPU cores,
    10 minutes when the cores are shared (load average 8)."""
    code, out, err = run_cli("reproduce", "--smoke", "--tracking-uri",
                             f"sqlite:///{tmp_path}/mlflow.db", "--smoke-data",
                             str(tmp_path / "data"), "--set", "train.num_threads=1",
                             monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err + out
    rows = _read_csv(tmp_path / "dashboards" / "reproduction" / "results.csv")
    assert len(rows) == 36 and {r["kind"] for r in rows} == {"smoke"}
    assert all(r["n_seeds"] == "1" and r["error_pct"] != "" for r in rows)
    assert {r["cell"] for r in rows} == set(BY_ID)
