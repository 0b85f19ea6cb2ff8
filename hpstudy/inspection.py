"""``hpstudy inspect``: find a trained model and its images in the stores, inspect it, write the page.

Composition, like :mod:`hpstudy.api`: the stores (:mod:`hpstudy.track`), the
network and data builders (:mod:`hpstudy.models`, :mod:`hpstudy.train`), the
computation (:mod:`hpstudy.analyze.inspect`) and the page
(:mod:`hpstudy.report.inspect`).

What is inspected:

* a study (file or name): its best trial. The registered ``<study>-best``
  model was built from that trial's ``checkpoint/model.pt``, and the network
  is rebuilt from the same file: the exported model cannot be hooked for
  class activation maps, the checkpoint can, and both hold the same weights.
* a run id: that run's ``checkpoint/model.pt`` (trials that improved on their
  study's best, every trial with ``tracking.log_checkpoints``, and every
  ``hpstudy train`` run keep one).

Weights are read with ``torch.load(..., weights_only=True)``; the run's
``config.yaml`` (its concrete config) rebuilds the data module, so the data
must be on this machine. Predictions are computed on the CPU, in batches, on
the validation split (the test split when there is no validation split, or
when asked).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .names import ATTR_CHECKPOINT, ATTR_RUN_ID, DEFAULT_REPORT_DIR

_log = logging.getLogger("hpstudy")
ARTIFACT_DIR = "inspection"  # where the page and its data land among the run's artifacts
CONFIG_ARTIFACT = "config.yaml"
N_CAMS = 8


class InspectError(ValueError):
    """Nothing to inspect: no such run or study, no completed trial, no checkpoint."""


@dataclass
class Subject:
    """A trained network found in the stores, with what rebuilds its data."""

    net: Any  # torch.nn.Module on the CPU, eval mode
    cfg: Any  # the run's concrete StudyConfig
    run_id: str
    tracking_uri: str
    experiment: str
    checkpoint_meta: dict[str, Any]
    label: str  # "best trial 7 of quickstart" / "run 1a2b..."
    facts: list[tuple[str, str]] = field(default_factory=list)


def subject_for_run(run_id: str, tracking_uri: str, label: str | None = None) -> Subject:
    """The network of a run's ``checkpoint/model.pt`` and its concrete config.

    Raises:
        InspectError: no such run, no checkpoint, or no config.yaml on it.
    """
    from mlflow.exceptions import MlflowException

    from .config import from_dict, load_yaml_text
    from .track import Tracker, registry

    why = registry.missing_store(tracking_uri)
    if why:
        raise InspectError(why)
    try:
        tracker = Tracker.for_run(tracking_uri, run_id)
    except MlflowException:
        raise InspectError(f"no run {run_id} in {tracking_uri}") from None
    try:
        ckpt = registry.load_checkpoint(tracker, run_id)
    except (MlflowException, OSError):
        raise InspectError(f"run {run_id} has no {registry.CHECKPOINT}: trials keep one when "
                           "they improve on their study's best (tracking.log_checkpoints: true "
                           "keeps every trial's), hpstudy train runs always do") from None
    with tempfile.TemporaryDirectory(prefix="hpstudy-inspect-") as tmp:
        try:
            path = tracker.client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
        except (MlflowException, OSError):
            raise InspectError(f"run {run_id} has no {CONFIG_ARTIFACT}") from None
        cfg = from_dict(load_yaml_text(Path(path).read_text(encoding="utf-8")),
                        f"{CONFIG_ARTIFACT} of run {run_id}", concrete=True)
    net = registry.build_network(ckpt)
    meta = dict(ckpt.get("meta") or {})
    facts = [("run", run_id), ("tracking URI", tracker.uri),
             ("weights", f"{registry.CHECKPOINT}: epoch {meta.get('best_epoch')}, "
                         f"{meta.get('monitor')} {_num(meta.get('value'))}")]
    return Subject(net, cfg, run_id, tracker.uri, tracker.experiment, meta,
                   label or f"run {run_id}", facts)


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def subject_for_study(study_name: str, storage_url: str, tracking_uri: str) -> Subject:
    """The best trial of a study (the run its registered ``<study>-best`` came from).

    Raises:
        InspectError: no completed trial, or the best one kept no checkpoint.
        StudyNotFoundError: no study of that name.
    """
    from .analyze import load_optuna_study
    from .track import Tracker, registry

    study = load_optuna_study(study_name, storage_url)
    try:
        best = study.best_trial
    except ValueError:
        raise InspectError(f"study '{study_name}' has no completed trial yet") from None
    run_id = best.user_attrs.get(ATTR_RUN_ID)
    if not run_id:
        raise InspectError(f"the best trial ({best.number}) of '{study_name}' has no MLflow run")
    subject = subject_for_run(run_id, tracking_uri,
                              label=f"best trial {best.number} of {study_name}")
    name = registry.best_model_name(study_name)
    registered = "not registered"
    try:
        latest = registry.latest_version(Tracker.for_run(tracking_uri, run_id), name)
        if latest is not None and latest.run_id == run_id:
            registered = f"models:/{name}/{latest.version} (built from this checkpoint)"
        elif latest is not None:
            registered = f"models:/{name}/{latest.version} comes from another run"
    except Exception as e:  # noqa: BLE001 - the registry is optional here
        registered = f"unknown ({type(e).__name__})"
    subject.facts[:0] = [("study", study_name), ("trial", f"{best.number} (value "
                                                          f"{_num(best.value)})"),
                         ("registered model", registered)]
    return subject


def inspect_subject(subject: Subject, split: str | None = None, limit: int | None = None,
                    n_cams: int = N_CAMS) -> Any:
    """Rebuild the data, predict, and collect what the page draws.

    Args:
        subject: from :func:`subject_for_run` / :func:`subject_for_study`.
        split: ``val`` or ``test`` (default: ``val``, ``test`` without validation).
        limit: inspect the first ``limit`` images of the split (None: all).
        n_cams: how many images get a class activation map.

    Returns:
        The :class:`~hpstudy.analyze.inspect.Inspection`.
    """
    import torch

    from .analyze import inspect as ai
    from .models import cam_layers
    from .train import build_datamodule
    from .train.transfer import find_head

    cfg, net = subject.cfg, subject.net
    dm = build_datamodule(cfg)
    dm.prepare()
    want = split or ("val" if dm.has_val else "test")
    if want not in ("val", "test"):
        raise InspectError(f"split must be val or test (got {want!r})")
    if want == "val" and not dm.has_val:
        raise InspectError("this run has no validation split (data.val_split: 0): use --split test")
    if want == "test" and not dm.has_test:
        raise InspectError(f"dataset '{cfg.data.dataset}' has no test split")
    model = subject.checkpoint_meta
    if int(dm.num_classes) != int(find_head(net).out_features):
        raise InspectError(f"the data has {dm.num_classes} classes, the network "
                           f"{find_head(net).out_features}: the run's data is not what it "
                           "trained on")
    loader = dm.dataloader(want, device="cpu")
    batches = (dm.prepare_batch(b, train=False) if dm.streaming else b for b in loader)
    probs, labels, images = ai.predict(net, batches, mean=dm.mean, std=dm.std, limit=limit)
    names = [str(c) for c in (dm.class_names or model.get("class_names") or
                              range(dm.num_classes))]
    total = dm.sizes.val if want == "val" else dm.sizes.test
    arch = cfg.model.arch
    insp = ai.Inspection(
        title=f"hpstudy inspect: {subject.label}", split=want, class_names=names,
        labels=labels, probs=probs, images=images)
    insp.facts = [("model", subject.label), *subject.facts,
                  ("architecture", f"{arch} ({sum(p.numel() for p in net.parameters()):,} "
                                   "parameters)"),
                  ("images", f"{cfg.data.dataset}, {'validation' if want == 'val' else 'test'} "
                             f"split: {'the first ' if len(labels) < total else ''}"
                             f"{len(labels)} of {total}, predicted on the CPU")]
    first = ai.first_layer(net, int(dm.in_chans))
    if first is None:
        insp.filters_note = f"'{arch}' does not start with a conv or linear layer on the images"
    else:
        insp.filters_layer, insp.filters = first
    cam = cam_layers(net)
    if cam is None:
        head = find_head(net)
        why = ("its last conv layer gives one map per class, averaged into the scores"
               if isinstance(head.module, torch.nn.Conv2d) else
               "its classifier reads flattened feature maps or hidden dense layers, not "
               "globally averaged feature maps")
        insp.cam_note = (f"No class activation maps: '{arch}' has no global-average-pooling "
                         f"head ({why}), so its class scores are not a weighted sum of its "
                         "last feature maps. Architectures with one: cnn (head: gap), the "
                         "ResNets and WRNs, DenseNets, GoogLeNet, Inception, MobileNetV2, "
                         "EfficientNets, Xception, and vgg*/bn_vgg15 with head: gap.")
    else:
        idx = ai.cam_examples(labels, n_cams)
        x = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float() / 255
        c = x.shape[1]
        x = (x - dm.mean.reshape(1, c, 1, 1)) / dm.std.reshape(1, c, 1, 1)
        cls = torch.from_numpy(probs[idx].argmax(axis=1))
        insp.cams = ai.class_activation_maps(net, cam.features, cam.classifier, x.float(), cls)
        insp.cam_index, insp.cam_class = idx, cls.numpy()
    return insp


@dataclass
class InspectOutcome:
    """What :func:`inspect` wrote."""

    folder: Path  # <out>/<name>/ with index.html and the data files
    run_id: str
    inspection: Any
    logged: bool


def is_run_id(target: str) -> bool:
    """Whether ``target`` reads as an MLflow run id (32 hex digits, not a file)."""
    from .config.toolbox import RUN_ID

    return bool(RUN_ID.match(target)) and not Path(target).exists()


def inspect(subject: Subject, *, name: str, out_dir: str | Path = DEFAULT_REPORT_DIR,
            split: str | None = None, limit: int | None = None, log: bool = True
            ) -> InspectOutcome:
    """Inspect ``subject``, write ``<out_dir>/<name>/index.html`` (+ data), log them to its run.

    Args:
        subject: from :func:`subject_for_run` / :func:`subject_for_study`.
        name: the page's folder under ``out_dir``.
        out_dir: the dashboards folder.
        split: ``val`` or ``test`` (see :func:`inspect_subject`).
        limit: inspect at most this many images.
        log: log the folder's files under ``inspection/`` of the inspected run.
    """
    from .report.inspect import write_inspection
    from .track import Tracker

    insp = inspect_subject(subject, split, limit)
    folder = write_inspection(insp, out_dir, name)
    logged = False
    if log:
        tracker = Tracker.for_run(subject.tracking_uri, subject.run_id)
        for f in sorted(folder.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                tracker.log_artifact(subject.run_id, f, ARTIFACT_DIR)
        logged = True
    return InspectOutcome(folder, subject.run_id, insp, logged)


def best_trial_sections(study_name: str, storage_url: str, tracking_uri: str | None,
                        limit: int | None = 1000) -> list[Any]:
    """The study report's inspection of its best trial: sections, or nothing.

    Nothing when the best trial kept no checkpoint (``tracking.register_best``
    and ``log_checkpoints`` off) or there is none; one note when the
    inspection fails (missing data, say): a report is never lost to it.
    """
    if tracking_uri is None:
        return []
    from .analyze import load_optuna_study

    try:
        best = load_optuna_study(study_name, storage_url).best_trial
    except (KeyError, ValueError):
        return []
    if ATTR_CHECKPOINT not in best.user_attrs:
        return []
    from .report import Section
    from .report.inspect import inspection_sections

    try:
        subject = subject_for_study(study_name, storage_url, tracking_uri)
        insp = inspect_subject(subject, limit=limit)
    except Exception as e:  # noqa: BLE001 - the rest of the report stands
        _log.warning("best trial not inspected: %s: %s", type(e).__name__, e)
        return [Section("inspect", "Inspection of the best trial",
                        note=f"not inspected: {type(e).__name__}: {e}")]
    return inspection_sections(insp, title=f"Inspection of the best trial ({subject.label})")
