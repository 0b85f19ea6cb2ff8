"""Inspection of a trained model: exact figure infos on a tiny known case, the network-side
computations (CAM identity, first layer, predictions), and `hpstudy inspect` end to end on a real
study and a real `hpstudy train` run, rendered in headless Chromium."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from hpstudy.analyze.inspect import (
    cam_examples,
    class_activation_maps,
    first_layer,
    predict,
    raw_cams,
)
from hpstudy.models import cam_layers, create_model
from hpstudy.report.inspect import (
    CamsInfo,
    CamTile,
    ConfusionInfo,
    FiltersInfo,
    MistakesInfo,
    MistakeTile,
    PerClassInfo,
    _cams_info,
    _confusion_info,
    _draw_cams,
    _draw_mistakes,
    _filters_info,
    _mistakes_info,
    _per_class_info,
)

NAN = float("nan")
NAMES = ["a", "b", "c"]
LABELS = np.array([0, 1, 2, 1, 0, 2])
PROBS = np.array([
    [0.75, 0.25, 0.0],  # 0: a, right
    [0.5, 0.25, 0.25],  # 1: b taken for a (0.5)
    [0.0, 0.125, 0.875],  # 2: c, right
    [0.125, 0.125, 0.75],  # 3: b taken for c (0.75), b not among the top 2
    [NAN, 0.5, 0.5],  # 4: non-finite: left out everywhere
    [0.5, 0.5, 0.0],  # 5: c taken for a (tie with b: the lower class wins), p(c) = 0
])
IMAGES = (np.arange(6, dtype=np.uint8) * 10).reshape(6, 1, 1, 1)  # grey 1x1 images


def _grey(v: int) -> tuple:
    return (((v, v, v),),)


# ------------------------------------------------------------------ pure infos
def test_confusion_and_per_class_infos():
    assert _confusion_info(LABELS, PROBS, NAMES) == ConfusionInfo(
        ("a", "b", "c"), ((1, 0, 0), (1, 0, 1), (1, 0, 1)), 5)
    assert _per_class_info(LABELS, PROBS, NAMES) == PerClassInfo(
        ("a", "b", "c"), (1.0, 0.0, 0.5), (1, 2, 2), 0.4)
    # a class without images is left out of the bars
    assert _per_class_info(np.array([0, 0]), np.array([[1.0, 0, 0], [0, 1.0, 0]]),
                           NAMES) == PerClassInfo(("a",), (0.5,), (2,), 0.5)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        _confusion_info(LABELS, PROBS[:, :2], NAMES)


def test_mistakes_info_most_confident_first_with_the_true_class_shown():
    info = _mistakes_info(LABELS, PROBS, IMAGES, NAMES, k=12, top=2)
    assert info == MistakesInfo((
        MistakeTile(3, "b", "c", 0.75, 0.125, ("c", "a", "b"), (0.75, 0.125, 0.125), _grey(30)),
        MistakeTile(1, "b", "a", 0.5, 0.25, ("a", "b"), (0.5, 0.25), _grey(10)),
        MistakeTile(5, "c", "a", 0.5, 0.0, ("a", "b", "c"), (0.5, 0.5, 0.0), _grey(50)),
    ), 3, 5)
    assert _mistakes_info(LABELS, PROBS, IMAGES, NAMES, k=1).tiles[0].index == 3
    fig = _draw_mistakes(info)
    assert [t.type for t in fig.data] == ["image", "bar"] * 3
    assert list(fig.data[1].marker.color) == ["#d62728", "#9e9e9e", "#2ca02c"]


def test_filters_info_scales_each_filter_around_zero():
    w = np.array([[[[1.0, -1.0]]], [[[0.5, 0.25]]], [[[NAN, 1.0]]]])  # (3, 1, 1, 2)
    info = _filters_info(w, "conv1")
    row = (255, 0, 255, 255, 191)  # filter 0, a white line, filter 1 (0.25 -> 0.75 -> 191)
    assert info == FiltersInfo("conv1", (3, 1, 1, 2), 1, 2, (tuple((v, v, v) for v in row),))
    rgb = _filters_info(np.array([[[[2.0]], [[0.0]], [[-2.0]]]]))  # one 1x1 filter, 3 channels
    assert rgb.mosaic == (((255, 128, 0),),)  # 0.5 + w / 4 -> 1, 0.5, 0
    with pytest.raises(ValueError, match="finite"):
        _filters_info(np.full((1, 1, 2, 2), NAN))


def test_cams_info_scales_each_map_and_drops_non_finite_ones():
    cams = np.array([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]], [[NAN, 0], [0, 0]]])
    images = np.zeros((6, 2, 2, 1), dtype=np.uint8)
    info = _cams_info(cams, np.array([0, 2, 1]), np.array([0, 2, 0]), LABELS, PROBS, images,
                      NAMES)
    black = (((0, 0, 0), (0, 0, 0)),) * 2
    assert info == CamsInfo((
        CamTile(0, "a", "a", 0.75, "a", black, ((0.0, 0.3333), (0.6667, 1.0))),
        CamTile(2, "c", "c", 0.875, "c", black, ((0.0, 0.0), (0.0, 0.0))),
    ))
    fig = _draw_cams(info)
    assert [t.type for t in fig.data] == ["image", "heatmap"] * 2


def test_cam_examples_cover_the_classes_first():
    assert cam_examples(np.array([2, 0, 0, 1, 2]), 4).tolist() == [1, 3, 0, 2]
    assert cam_examples(np.array([1, 1]), 8).tolist() == [0, 1]


# ------------------------------------------------------------------ network side
def test_class_activation_maps_average_to_the_logits():
    torch.manual_seed(0)
    net = create_model("cnn", num_classes=5, in_chans=3, input_size=16, width=4, stages=2,
                       convs_per_stage=1).eval()
    cam = cam_layers(net)
    x = torch.randn(3, 3, 16, 16)
    classes = torch.tensor([0, 4, 2])
    with torch.no_grad():
        logits = net(x)
        maps = raw_cams(net, cam.features, cam.classifier, x, classes)
    assert maps.shape == (3, 4, 4)  # two 2x2 pools: 16 -> 4
    expected = logits[torch.arange(3), classes]
    assert torch.allclose(maps.mean((1, 2)) + cam.classifier.bias[classes], expected, atol=1e-5)
    up = class_activation_maps(net, cam.features, cam.classifier, x, classes)
    assert up.shape == (3, 16, 16) and np.isfinite(up).all()


def test_first_layer_of_a_conv_net_and_of_an_mlp():
    conv = create_model("cnn", num_classes=3, in_chans=3, input_size=8, width=4, stages=1)
    name, w = first_layer(conv, 3)
    assert name.startswith("features.0 (Conv2d 3->4, 3x3") and w.shape == (4, 3, 3, 3)
    mlp = create_model("mlp", num_classes=3, in_chans=1, input_size=8, hidden=[80])
    name, w = first_layer(mlp, 1)
    assert w.shape == (64, 1, 8, 8)  # 80 units, the first 64 drawn, one 8x8 image each
    first = next(m for m in mlp.modules() if isinstance(m, torch.nn.Linear))
    assert np.array_equal(w[5, 0], first.weight.detach()[5].reshape(8, 8).numpy())


def test_predict_stops_at_the_limit_and_denormalizes():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    batches = [(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 0])),
               (torch.full((3, 1, 2, 2), 2.0), torch.tensor([1, 1, 1]))]
    probs, labels, images = predict(net, batches, mean=mean, std=std, limit=4)
    assert probs.shape == (4, 2) and labels.tolist() == [0, 1, 0, 1]
    assert images.shape == (4, 2, 2, 1)
    assert images[0, 0, 0, 0] == 128 and images[3, 0, 0, 0] == 255  # (0*.25+.5), (2*.25+.5)
    assert np.allclose(probs.sum(axis=1), 1.0)


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def inspected(tmp_path_factory):
    """A one-trial study (GAP cnn on synthetic shapes) with its best model registered and its
    report written, and one `hpstudy train` run of an MLP on digits, in one store."""
    from hpstudy.api import run_config, train
    from hpstudy.config import from_dict

    root = tmp_path_factory.mktemp("inspect")
    storage, uri = f"sqlite:///{root}/optuna.db", f"sqlite:///{root}/mlflow.db"
    cfg = from_dict({
        "name": "shapes",
        "data": {"dataset": "synthetic", "n_classes": 5, "image_size": 16, "n_samples": 400,
                 "test_samples": 50, "batch_size": 32},
        "model": {"arch": "cnn", "width": 8, "stages": 2, "convs_per_stage": 1},
        "train": {"max_epochs": 3, "lr": 0.01, "accelerator": "cpu"},
        "search": {"n_trials": 1, "sampler": "random", "pruner": "none",
                   "space": {"train.lr": [0.01]}},
        "report": {"enabled": True, "dir": str(root / "dashboards")},
    })
    summary = run_config(cfg, storage=storage, tracking_uri=uri, progress=False)
    mlp = from_dict({"name": "digits-mlp", "data": {"dataset": "digits", "subset": 300},
                     "model": {"arch": "mlp", "hidden": [32]},
                     "train": {"max_epochs": 2, "lr": 0.01, "accelerator": "cpu"},
                     "tracking": {"uri": uri}})
    run = train(mlp)
    return {"root": root, "storage": storage, "uri": uri, "summary": summary,
            "mlp_run": run.run_id}


def test_study_report_holds_the_best_trials_inspection(inspected):
    page = Path(inspected["summary"].report_path).read_text(encoding="utf-8")
    assert "Inspection of the best trial (best trial 0 of shapes)" in page
    for key in ("inspect-confusion", "inspect-per-class", "inspect-mistakes", "inspect-filters",
                "inspect-cams"):
        assert f'id="{key}"' in page, key
    assert inspected["summary"].registered_model == "models:/shapes-best/1"


@pytest.fixture(scope="module")
def chromium():
    from browser import ensure_chromium

    path, why = ensure_chromium()
    if path is None:
        pytest.skip(f"headless Chromium unavailable: {why}")
    return path


def test_inspect_study_writes_logs_and_renders(inspected, chromium, tmp_path, monkeypatch,
                                               capsys):
    from browser import screenshot_and_check
    from mlflow import MlflowClient

    code, out, err = run_cli("inspect", "shapes", "--storage", inspected["storage"],
                             "--tracking-uri", inspected["uri"], "--out", str(tmp_path / "out"),
                             monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    folder = tmp_path / "out" / "shapes" / "inspect"
    assert f"page         {folder / 'index.html'}" in out
    summary = json.loads((folder / "summary.json").read_text())
    run_id = inspected["summary"].best_run_id
    best = MlflowClient(inspected["uri"]).get_run(run_id).data.metrics["best_val_acc"]
    # the checkpoint holds the best epoch's weights: the same accuracy on the same images
    assert summary["split"] == "val" and summary["n_images"] == 80
    assert math.isclose(summary["accuracy"], best, abs_tol=1e-6)
    assert summary["facts"]["registered model"] == "models:/shapes-best/1 (built from this " \
                                                   "checkpoint)"
    assert summary["cams"] == "drawn" and summary["first_layer"].startswith("features.0")
    logged = sorted(f.path for f in MlflowClient(inspected["uri"]).list_artifacts(
        run_id, "inspection"))
    assert logged == [f"inspection/{n}" for n in ("confusion.csv", "index.html",
                                                  "per_class.csv", "predictions.csv",
                                                  "summary.json")]
    rows = (folder / "predictions.csv").read_text().splitlines()
    assert len(rows) == 81 and rows[0].startswith("index,true,predicted,confidence,p_shape0_v0")

    shot = tmp_path / "inspect.png"
    result = screenshot_and_check(folder / "index.html", shot, window_size=(1400, 3400),
                                  chromium=chromium)
    assert result["probe"] and result["errors"] == [], result["errors"]
    assert (result["plots"], result["plots_drawn"]) == (5, 5)
    assert shot.stat().st_size > 50_000


def test_inspect_run_of_a_model_without_gap_head(inspected, tmp_path, monkeypatch, capsys):
    run_id = inspected["mlp_run"]
    code, out, err = run_cli("inspect", run_id, "--tracking-uri", inspected["uri"], "--out",
                             str(tmp_path), "--split", "test", "--max-images", "100", "--no-log",
                             monkeypatch=monkeypatch, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    assert "on 100 test images" in out and "logged" not in out
    page = (tmp_path / "digits-mlp" / f"inspect-{run_id[:8]}" / "index.html").read_text()
    assert "No class activation maps: &#x27;mlp&#x27; has no global-average-pooling head" in page
    assert "net.1 (Linear 64" in page  # the first layer drawn as 32 images of 8x8


def test_inspect_refuses_what_it_cannot_inspect(inspected, tmp_path, monkeypatch, capsys):
    for args, fragment in (
        (["0" * 32, "--tracking-uri", inspected["uri"]], f"no run {'0' * 32}"),
        (["0" * 32, "--tracking-uri", f"sqlite:///{tmp_path}/none.db"], "no MLflow store"),
        (["nostudy", "--storage", inspected["storage"], "--tracking-uri", inspected["uri"]],
         "no study of that name"),
        (["shapes", "--storage", inspected["storage"], "--tracking-uri", inspected["uri"],
          "--split", "train"], "--split train: expected val or test"),
    ):
        code, out, err = run_cli("inspect", *args, monkeypatch=monkeypatch, cwd=tmp_path,
                                 capsys=capsys)
        assert code == 2, (args, out, err)
        assert fragment in err, err
    assert not (tmp_path / "none.db").exists()
