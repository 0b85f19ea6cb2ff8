"""The ``hpstudy`` command line: thin; parses, calls one function, prints.

Exit codes: 0 success, 2 bad study file / flag / data (one message naming the
file and field, before anything is written), 3 a guided stage stopped by its
rule (``hpstudy guide``), 1 any other failure.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup


class _Group(TyperGroup):
    """Typer's group, with ``-h/--help`` shown as a flag (no ``<bool>``) on every verb."""

    def get_help_option(self, ctx: Any) -> Any:
        return _flag(super().get_help_option(ctx))

    def get_command(self, ctx: Any, name: str) -> Any:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            _flag(cmd.get_help_option(ctx))
        return cmd


def _flag(option: Any) -> Any:
    if option is not None:
        option.metavar = ""
    return option


app = typer.Typer(
    cls=_Group,
    name="hpstudy",
    help="Hyperparameter studies on image classifiers (Optuna + Lightning + MLflow + Plotly).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# STUDY arguments: `run` and `train` need the file (its data and search space);
# verbs that read a study also take its name, whose config is kept in the storage.
StudyFileArg = Annotated[str, typer.Argument(metavar="STUDY.yaml", help="Study file (YAML).")]
StudyArg = Annotated[
    str, typer.Argument(metavar="STUDY", help="Study file (YAML) or study name (its config is "
                                              "kept in the Optuna storage).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE",
                 help="Override a config key: --set train.lr=0.01 (repeatable; dotted keys or "
                      "aliases lr, batch_size, max_epochs...)."),
]
StorageOpt = Annotated[
    str | None, typer.Option("--storage", metavar="URL",
                             help="Optuna storage URL (default sqlite:///mlruns/optuna.db, "
                                  "or $HPSTUDY_STORAGE).")
]
TrackingOpt = Annotated[
    str | None, typer.Option("--tracking-uri", metavar="URI",
                             help="MLflow tracking URI (default sqlite:///mlruns/mlflow.db, "
                                  "or $MLFLOW_TRACKING_URI).")
]
NTrialsOpt = Annotated[int | None, typer.Option("--n-trials", metavar="N", min=1,
                                                help="Trials to run now (default: the study "
                                                     "file's search.n_trials).")]
TimeoutOpt = Annotated[float | None, typer.Option("--timeout", metavar="SECONDS", min=0,
                                                  help="No new trial starts after this many "
                                                       "seconds.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", metavar="",
                                        help="No progress bar (the per-trial lines and the "
                                             "summary are still printed).")]


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"hpstudy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", metavar="", callback=_version,
                                          is_eager=True, help="Print the version and exit.")]
    = False,
) -> None:
    """Hyperparameter studies on image classifiers (Optuna + Lightning + MLflow + Plotly)."""


def _say(message: str) -> None:
    """A status line on stderr, flushed at once (stdout may be a pipe that buffers)."""
    typer.echo(message, err=True)
    sys.stderr.flush()


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _guard(fn: Callable[[], Any], trap: bool = True) -> Any:
    """Run ``fn`` mapping user errors to exit 2, signals to 128 + signum, the rest to exit 1.

    With ``trap``, SIGINT, SIGTERM and SIGHUP become :class:`~hpstudy._proc.Interrupted`
    while ``fn`` runs: whatever it was running records itself as interrupted, and
    one line says what finished and how to resume.
    """
    from ._proc import Interrupted, trap_signals

    try:
        if not trap:
            return fn()
        with trap_signals():
            return fn()
    except typer.Exit:
        raise
    except (Interrupted, KeyboardInterrupt) as e:
        stop = e if isinstance(e, Interrupted) else Interrupted(signal.SIGINT)
        typer.echo(_interrupted_line(stop), err=True)
        raise typer.Exit(stop.exit_code) from None
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
        if _bad_input(e):
            _fail(str(e), 2)
        if os.environ.get("HPSTUDY_DEBUG"):
            traceback.print_exc()
        _fail(f"{type(e).__name__}: {e}", 1)


def _bad_input(e: Exception) -> bool:
    """A bad study file, flag, data set or model name (exit 2).

    The error classes are looked up only once something failed: importing
    ``hpstudy.data`` and ``hpstudy.models`` imports torch (seconds), and the
    first line of a command must not wait for that.
    """
    from .config import ConfigError

    kinds: list[type] = [ConfigError]
    for module, name in (("hpstudy.data", "DatasetError"), ("hpstudy.models", "UnknownModelError")):
        if module in sys.modules:  # such an error can only come from a module that was imported
            kinds.append(getattr(sys.modules[module], name))
    return isinstance(e, tuple(kinds))


def _interrupted_line(stop: Any) -> str:
    """One line: the signal, what finished, and the exact command that resumes."""
    done = getattr(stop, "progress", None)
    what = f"; {done}" if done else ""
    args = _strip_option(list(_ARGV), "--n-trials")
    remaining = getattr(stop, "remaining", None)
    if remaining:
        args += ["--n-trials", str(remaining)]
    return f"interrupted by {stop.name}{what}; resume with: hpstudy {shlex.join(args)}"


def _strip_option(args: list[str], name: str) -> list[str]:
    """``args`` without ``name VALUE`` / ``name=VALUE``."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


def load_checked(study: str, overrides: list[str] | None):
    """Load a study file and check its data is there, before anything is written."""
    from .config import load_study
    from .data import check_dataset, data_root

    cfg = load_study(study, overrides)
    d = cfg.data
    check_dataset(d.dataset, root=data_root(d.root), download=d.download, val_split=d.val_split,
                  subset=d.subset, seed=d.seed, augmentation=d.augmentation, **d.options)
    return cfg


def resolve_study(study: str, overrides: list[str] | None, storage: str | None):
    """A study file, or the name of a study whose config is kept in the storage."""
    from .config import ConfigError, apply_overrides, from_dict, load_yaml_text, parse_set
    from .names import ATTR_CONFIG

    if Path(study).exists() or study.endswith((".yaml", ".yml")):
        return load_checked(study, overrides)
    import optuna

    from ._stores import check_storage
    from .config import DEFAULT_STORAGE
    from .search import get_storage

    url = storage or os.environ.get("HPSTUDY_STORAGE") or DEFAULT_STORAGE
    check_storage(url, "--storage" if storage else "$HPSTUDY_STORAGE"
                  if os.environ.get("HPSTUDY_STORAGE") else f"storage (default {DEFAULT_STORAGE})")
    try:
        loaded = optuna.load_study(study_name=study, storage=get_storage(url))
    except KeyError:
        raise ConfigError(study, None, f"no such study file, and no study of that name in {url}") \
            from None
    text = loaded.user_attrs.get(ATTR_CONFIG)
    if not text:
        raise ConfigError(study, None, f"study found in {url} but it has no stored config; "
                                       "pass the study file instead")
    cfg = from_dict(load_yaml_text(text), f"{study} (config stored in {url})")
    if overrides:
        cfg = apply_overrides(cfg.to_dict(), parse_set(overrides), source="--set")
    return cfg


def _print_summary(s) -> None:
    """The end of a study: counts, the best trial (params one per line, its test scores), stores."""
    from .search.progress import safe_url

    c = s.counts
    typer.echo("")
    typer.echo(f"study        {s.study_name}: {c['total']} trials ({c['complete']} complete, "
               f"{c['pruned']} pruned, {c['failed']} failed) in {s.duration_s:.1f}s")
    if s.best_value is not None:
        ties = (f"; tied with trial{'s' if len(s.best_ties) > 1 else ''} "
                f"{', '.join(map(str, s.best_ties))}" if s.best_ties else "")
        verdict = f", {s.best_verdict}" if s.best_verdict else ""
        typer.echo(f"best value   {s.best_value:.4f} (trial {s.best_trial}{verdict}{ties})")
        if s.best_test:
            typer.echo("best test    " + ", ".join(f"{k} {v:.4f}" for k, v in s.best_test.items())
                       + " (at its selected epoch)")
        pad = max((len(k) for k in s.best_params), default=0)
        for i, (k, v) in enumerate(s.best_params.items()):
            typer.echo(f"{'best params' if i == 0 else '':13s}{k:{pad}s}  {_fmt(v)}")
        typer.echo(f"best run     {s.best_run_id}")
    else:
        typer.echo("best value   none (no trial completed)")
    typer.echo(f"study run    {s.parent_run_id} (experiment {s.experiment_id})")
    typer.echo(f"optuna       {safe_url(s.storage)}")
    typer.echo(f"mlflow       {safe_url(s.tracking_uri)}   (open with: hpstudy ui)")
    if s.registered_model:
        typer.echo(f"best model   {s.registered_model}")
    if s.report_path:
        typer.echo(f"dashboard    {s.report_path}")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command()
def run(
    study: StudyFileArg,
    n_trials: NTrialsOpt = None,
    timeout: TimeoutOpt = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", metavar="N", min=1,
        help="Trials in parallel on this machine, one process each (default: search.workers, "
             "else one per trial slot: GPUs x trials per GPU).")
    ] = None,
    trials_per_gpu: Annotated[int | None, typer.Option(
        "--trials-per-gpu", metavar="K", min=1,
        help="One-GPU trials run at once on each GPU (search.trials_per_gpu; default 1).")
    ] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    set_: SetOpt = None,
    no_report: Annotated[bool, typer.Option("--no-report", metavar="",
                                            help="Skip the dashboard at the end.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Create or resume the study of a study file and run its trials; ends with the best trial."""

    def go():
        # the first line comes before torch, Lightning and MLflow are imported (seconds)
        typer.echo(f"loading      {study} (torch, Lightning, MLflow) ...")
        sys.stdout.flush()
        per_gpu = [f"search.trials_per_gpu={trials_per_gpu}"] if trials_per_gpu else []
        cfg = load_checked(study, [*(set_ or []), *per_gpu])
        from .api import preflight, run_config

        preflight(cfg, storage=storage, tracking_uri=tracking_uri, source=study)
        summary = run_config(cfg, n_trials=n_trials, timeout=timeout, workers=workers,
                             storage=storage, tracking_uri=tracking_uri, progress=not quiet,
                             report=False if no_report else None)
        _print_summary(summary)

    _guard(go)


@app.command()
def worker(
    study: StudyArg,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    n_trials: Annotated[int | None, typer.Option(
        "--n-trials", metavar="N", min=1,
        help="Trials this worker runs (default: until the study's search.n_trials are done "
             "here).")] = None,
    timeout: TimeoutOpt = None,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Join a running study from another process or machine; STUDY may be its name.

    With a name, the study's config is read from the storage, so another
    machine needs only --storage (and --tracking-uri for a shared MLflow).
    """

    def go():
        typer.echo(f"loading      {study} ...")
        sys.stdout.flush()
        cfg = resolve_study(study, set_, storage)
        from .api import preflight
        from .search import run_study
        from .search.parallel import with_worker_seed

        preflight(cfg, storage=storage, tracking_uri=tracking_uri, source=study)
        from .search.progress import header

        for line in header(cfg, n_trials, storage, tracking_uri):
            typer.echo(line)
        # a seed of its own: workers sharing the study's seed would propose the same trials
        summary = run_study(with_worker_seed(cfg), n_trials=n_trials, timeout=timeout,
                            storage=storage, tracking_uri=tracking_uri, progress=not quiet)
        _print_summary(summary)

    _guard(go)


@app.command()
def train(
    study: StudyFileArg,
    set_: SetOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """One run with fixed hyperparameters: the study file's values plus --set (no search)."""

    def go():
        typer.echo(f"loading      {study} ...")
        sys.stdout.flush()
        cfg = load_checked(study, set_)
        from .api import preflight
        from .api import train as train_once

        preflight(cfg, tracking_uri=tracking_uri, source=study, optuna_store=False)
        outcome = train_once(cfg, tracking_uri)
        result = outcome.result
        for r in result.history:
            typer.echo(f"epoch {r['epoch']:3d}  train_loss {r['train_loss']:.4f}  "
                       f"train_acc {r['train_acc']:.4f}  val_loss {r['val_loss']:.4f}  "
                       f"val_acc {r['val_acc']:.4f}  lr {r['lr']:.3g}")
        typer.echo(f"status       {result.status}" + (f" ({result.reason})" if result.reason else ""))
        if result.best_epoch is not None:
            typer.echo(f"best epoch   {result.best_epoch}: val_acc {result.best['val_acc']:.4f}")
        if result.test:
            typer.echo("test         " + ", ".join(f"{k} {v:.4f}" for k, v in result.test.items()))
        diag = outcome.attrs.get("diagnosis_detail")
        if diag:
            typer.echo(f"diagnosis    {diag['verdict']}: {diag['reason']}")
            for line in diag.get("advice", []):
                typer.echo(f"  - {line}")
        typer.echo(f"run          {outcome.run_id} in {outcome.tracking_uri}")
        if result.status == "diverged":
            raise typer.Exit(1)

    _guard(go)


@app.command()
def guide(
    study: StudyArg,
    budget_epochs: Annotated[float | None, typer.Option(
        "--budget-epochs", min=1, metavar="EPOCHS", help="Total training epochs of all stages (default: "
                                       "guide.budget_epochs, else search.n_trials x "
                                       "train.max_epochs).")] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    set_: SetOpt = None,
    no_report: Annotated[bool, typer.Option("--no-report", metavar="",
                                            help="Skip the guide's page at the end.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Guided tuning: learn anything, learn everything, learn the right thing (three linked
    studies <study>/1-anything, /2-everything, /3-right-thing). A stage that fails its rule
    stops the guide with its diagnosis and advice (exit 3); rerunning resumes there."""

    def go():
        cfg = load_checked(study, set_)
        from .api import preflight, run_guide_plan
        from .guide import plan_guide

        plan = plan_guide(cfg, study, budget_epochs)
        preflight(cfg, storage=storage, tracking_uri=tracking_uri, source=study)
        summary = run_guide_plan(plan, storage=storage, tracking_uri=tracking_uri,
                                 progress=not quiet, report=False if no_report else None,
                                 echo=typer.echo)
        _print_guide(summary)
        if summary.stopped is not None:
            raise typer.Exit(3)

    _guard(go)


def _print_guide(s) -> None:
    from .guide import fmt_overrides
    from .guide.budget import fmt_epochs, fmt_split

    typer.echo("")
    spent = f"{fmt_epochs(s.used)} of {fmt_epochs(s.budget)} epochs ({fmt_split(s.spent)})"
    if s.stopped is not None:
        r = s.stopped
        typer.echo(f"stopped      {s.name}: stage {r.stage} failed its rule after {spent}")
        typer.echo(f"why          {r.line}")
        if r.diagnosis:
            typer.echo(f"diagnosis    {r.diagnosis}")
        for i, a in enumerate(r.advice):
            typer.echo(f"{'advice' if i == 0 else '':12s} - {a}")
        typer.echo(f"resume       change what the advice says (--set ..., the study file) and "
                   f"rerun: accepted stages are kept, {r.stage} continues")
    else:
        last = s.stages[-1]
        typer.echo(f"guide        {s.name}: 3 stages accepted; {spent} in {s.duration_s:.1f}s")
        typer.echo(f"best value   {last.value:.4f} ({last.study}, trial {last.winner})")
        typer.echo(f"best config  {fmt_overrides(s.final)} (over the study file)")
        typer.echo(f"best run     {last.parent_run_id} holds guide_config.yaml")
    typer.echo(f"optuna       {s.storage}")
    typer.echo(f"mlflow       {s.tracking_uri}   (experiment {s.experiment}; open with: hpstudy ui)")
    if s.report_path:
        typer.echo(f"dashboard    {s.report_path}")


@app.command()
def ablate(
    ablation: Annotated[str, typer.Argument(
        metavar="ABLATION.yaml",
        help="Ablation file (YAML), e.g. studies/ablations/quick_digits.yaml.")],
    tracking_uri: TrackingOpt = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE",
                     help="Override a base-config key for every cell (--set train.max_epochs=2), "
                                   "or the ablation's seeds/design/metric (--set seeds=[0,1]); repeatable."),
    ] = None,
    no_report: Annotated[bool, typer.Option("--no-report", metavar="",
                                            help="Skip the ablation report.")] = False,
) -> None:
    """Train every cell x seed of an ablation, then print its statistics and write its report.

    Finished runs are kept (a rerun trains only what is missing); the printout
    gives cell means with 95% CIs, effects and interactions.
    """

    def go():
        typer.echo(f"loading      {ablation} ...")
        sys.stdout.flush()
        from ._stores import check_tracking
        from .analyze.ablation import format_ablation
        from .api import ablate as run_ablation
        from .search.ablation import check_data, load_ablation

        plan = load_ablation(ablation, set_)
        check_data(plan)  # a missing data set is exit 2 before any run is written
        from .train.device import check_device_options

        for cfg in plan.configs.values():  # so is a device option this machine cannot honour
            check_device_options(cfg, ablation, space=False)
        check_tracking(plan.tracking_uri(tracking_uri),
                       "--tracking-uri" if tracking_uri else f"{ablation}: tracking URI")
        s = run_ablation(plan, tracking_uri=tracking_uri,
                         report=False if no_report else None, echo=typer.echo)
        typer.echo("")
        typer.echo(format_ablation(s.stats))
        typer.echo("")
        typer.echo(f"ablation     {s.name}: {s.planned} runs ({s.ran} run now, {s.resumed} "
                   f"already finished, {s.failed} failed now) in {s.duration_s:.1f}s")
        typer.echo(f"mlflow       experiment {plan.experiment} (id {s.experiment_id}), summary run "
                   f"{s.summary_run_id} in {s.tracking_uri}   (open with: hpstudy ui)")
        if s.report_path:
            typer.echo(f"report       {s.report_path}")
        if not (s.stats.cells["n"] > 0).any():
            _fail("no run of the ablation succeeded (see the notes above)", 1)

    _guard(go)


@app.command()
def refit(
    study: StudyArg,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="KEY=VALUE", help="Override a key of the refit's config: --set data.root=/data "
                                   "(repeatable)."),
    ] = None,
) -> None:
    """Retrain the best trial's config on train + validation for the same number of epochs,
    evaluate the test split once, and log it as its own MLflow run under the study's run."""

    def go():
        cfg, _, _ = _study_to_read(study, storage, tracking_uri)
        from .api import preflight
        from .api import refit as refit_best
        from .config import parse_set

        preflight(cfg, storage=storage, tracking_uri=tracking_uri, source=study)
        out = refit_best(cfg, storage=storage, tracking_uri=tracking_uri,
                         overrides=parse_set(set_) or None)
        plan, result = out.plan, out.result
        n_train = result.data_info.get("data.n_train")
        typer.echo(f"refit        trial {plan.trial} of {plan.study}: {plan.epochs} epochs on "
                   f"{n_train} training images (train + validation), final epoch kept")
        for note in plan.notes:
            typer.echo(f"note         {note}")
        typer.echo(f"status       {result.status}" + (f" ({result.reason})" if result.reason else ""))
        if result.history:
            last = result.history[-1]
            typer.echo(f"last epoch   {last['epoch']}: train_loss {last['train_loss']:.4f}  "
                       f"train_acc {last['train_acc']:.4f}")
        if result.test:
            acc = result.test.get("test_acc")
            err = f" (test error {100 * (1 - acc):.2f}%)" if acc is not None else ""
            typer.echo("test         " + ", ".join(f"{k} {v:.4f}" for k, v in result.test.items())
                       + err)
        typer.echo(f"run          {out.run_id} ({plan.run_name}, nested under study run "
                   f"{plan.parent_run_id}) in {out.tracking_uri}")
        if result.state != "COMPLETE":
            raise typer.Exit(1)

    _guard(go)


@app.command()
def reproduce(
    cells: Annotated[list[str] | None, typer.Argument(
        help="Cells of the thesis's Table 4.6 (nin-cifar10+, 'preact_resnet*', '*-svhn'); "
             "all 36 by default.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", metavar="N", min=1, help="Seeds per cell (mean ± std).")] = 1,
    epochs_scale: Annotated[float, typer.Option(
        "--epochs-scale", metavar="F", help="Fraction of each recipe's epochs and schedule, in (0, 1].")] = 1.0,
    smoke: Annotated[bool, typer.Option(
        "--smoke", metavar="", help="Generated data in the datasets' formats, a few batches per epoch "
                        "(default --epochs-scale 0.02): tests the pipeline, reproduces nothing.")
    ] = False,
    no_train: Annotated[bool, typer.Option(
        "--no-train", metavar="", help="Only tabulate the runs already in the store.")] = False,
    tracking_uri: TrackingOpt = None,
    out: Annotated[str, typer.Option("--out", metavar="DIR", help="Dashboards folder.")] = "dashboards",
    studies: Annotated[str | None, typer.Option(
        "--studies", metavar="DIR", help="Folder of the thesis study files and table_4_6.csv "
                          "(default studies/thesis).")] = None,
    smoke_data: Annotated[str | None, typer.Option(
        "--smoke-data", metavar="DIR", help="Where --smoke writes its files (default <data root>/hpstudy-smoke).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a key of every cell's config: --set data.root=/data "
                      "(repeatable).")] = None,
) -> None:
    """Run thesis cells with the thesis recipe and compare with the paper, side by side:
    writes dashboards/reproduction/index.html and results.csv."""

    def go():
        from ._stores import check_tracking
        from .api import reproduce as run_cells
        from .config import parse_set
        from .names import DEFAULT_TRACKING_URI, TRACKING_ENV
        from .reproduce import format_table

        uri = tracking_uri or os.environ.get(TRACKING_ENV) or DEFAULT_TRACKING_URI
        check_tracking(uri, "--tracking-uri" if tracking_uri else f"tracking URI ({uri})")
        scale = 0.02 if smoke and epochs_scale == 1.0 else epochs_scale
        s = run_cells(cells or None, seeds=seeds, epochs_scale=scale, smoke=smoke,
                      train=not no_train, tracking_uri=uri, out_dir=out, studies=studies,
                      overrides=parse_set(set_) or None, smoke_root=smoke_data, echo=typer.echo)
        typer.echo("")
        typer.echo(format_table(s.rows))
        typer.echo("")
        if not no_train:
            typer.echo(f"reproduce    {len(s.plan.runs())} run(s): {s.ran} run now, {s.resumed} "
                       f"already finished, {len(s.failed)} failed, in {s.duration_s:.1f}s")
        for line in s.failed:
            typer.echo(f"failed       {line}")
        typer.echo(f"mlflow       experiment thesis-reproduction (id {s.experiment_id}) in "
                   f"{s.tracking_uri}   (open with: hpstudy ui)")
        typer.echo(f"results      {s.csv_path}")
        if s.report_path:
            typer.echo(f"page         {s.report_path}")
        if s.plan.kind != "reproduction":
            typer.echo(f"note         {s.plan.kind} rows: not reproductions of the thesis")
        if s.failed:
            raise typer.Exit(1)

    _guard(go)


@app.command()
def models(
    in_chans: Annotated[int, typer.Option("--in-chans", metavar="C", min=1,
                                          help="Input channels the counts are for.")] = 3,
    num_classes: Annotated[int, typer.Option("--num-classes", metavar="K", min=2,
                                             help="Classes the counts are for.")] = 10,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", metavar="S", min=1,
        help="Image side in pixels (default: each model's native size).")] = None,
    pattern: Annotated[str | None, typer.Argument(
        metavar="PATTERN", help="Shell pattern of model names, e.g. 'preact*'.")] = None,
) -> None:
    """The model registry with parameter counts, in natural order (resnet20 before resnet110)."""

    def go():
        from .models import models_table

        rows = models_table(in_chans=in_chans, num_classes=num_classes, input_size=input_size)
        if pattern:
            import fnmatch

            rows = [r for r in rows if fnmatch.fnmatch(r["name"], pattern)]
        if not rows:
            _fail(f"no model matches '{pattern}'", 2)
        typer.echo(f"{'name':22s} {'family':14s} {'params':>12s} {'native':>6s} {'min':>4s}  description")
        for r in sorted(rows, key=lambda r: natural_key(r["name"])):
            typer.echo(f"{r['name']:22s} {r['family']:14s} {r['params']:>12,d} "
                       f"{r['native_size']:>6d} {r['min_size']:>4d}  {r['description']}")

    _guard(go)


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digits by value: ``resnet20`` before ``resnet110``."""
    import re

    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _study_to_read(study: str, storage: str | None, tracking_uri: str | None):
    """(config, storage URL, tracking URI) of a study file or name.

    Reading a study needs no data: a file is validated without checking that
    its dataset is on this machine.
    """
    from .config import load_study

    if Path(study).is_file() or study.endswith((".yaml", ".yml")):
        cfg = load_study(study)
    else:
        cfg = resolve_study(study, None, storage)
    return cfg, cfg.storage_url(storage), cfg.tracking_uri(tracking_uri)


def _thresholds(items: list[str] | None) -> dict[str, Any]:
    from .analyze import threshold_defaults

    known = threshold_defaults()
    out: dict[str, Any] = {}
    for item in items or []:
        name, _, text = item.partition("=")
        name = name.strip()
        if name not in known or not text:
            _fail(f"--threshold {item}: expected NAME=VALUE with NAME one of "
                  f"{', '.join(known)}", 2)
        try:
            out[name] = type(known[name])(float(text))
        except ValueError:
            _fail(f"--threshold {item}: '{text}' is not a number", 2)
    return out


ThresholdOpt = Annotated[
    list[str] | None,
    typer.Option("--threshold", metavar="NAME=VALUE",
                 help="Override a diagnosis threshold: --threshold fit_acc=0.6 "
                                     "(repeatable; see hpstudy.analyze.Thresholds)."),
]


@app.command()
def diagnose(
    study: StudyArg,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    threshold: ThresholdOpt = None,
    next_: Annotated[str | None, typer.Option(
        "--next", metavar="FILE",
        help="Also write the next round's study file here: the space narrowed "
             "around the best trials plus the remedies their verdicts call for.")] = None,
) -> None:
    """Read every trial's learning curves: verdict, evidence, advice, and a study summary."""

    def go():
        cfg, url, uri = _study_to_read(study, storage, tracking_uri)
        from .analyze import StudyNotFoundError, collect, diagnose_trials, format_text, summarize

        try:
            data = collect(cfg.name, url, uri)
        except StudyNotFoundError as e:
            _fail(f"{e} (run it first)", 2)
        table = diagnose_trials(data, **_thresholds(threshold))
        typer.echo(format_text(table, summarize(table, data)))
        if next_:
            _write_next(next_, data, table, cfg, url, uri)

    _guard(go)


def _write_next(path: str, data: Any, table: Any, cfg: Any, url: str, uri: str) -> None:
    from .search.next_round import plan_next_round, write_next_round

    try:
        plan = plan_next_round(data, table, cfg, storage=url, tracking_uri=uri)
    except ValueError as e:
        _fail(f"--next: {e}", 2)
    written = write_next_round(path, plan)
    typer.echo("")
    typer.echo(f"next round   {written} (study {plan.name}, trial 0 = trial {plan.top[0]}); "
               f"{len(plan.changes)} change(s):")
    for c in plan.changes:
        typer.echo(f"  - {c.key}: {c.why}")
    typer.echo(f"run it with  hpstudy run {written}")


@app.command()
def report(
    study: StudyArg,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    out: Annotated[str | None, typer.Option(
        "--out", metavar="DIR", help="Dashboards folder (default: the study's report.dir).")] = None,
    top: Annotated[int, typer.Option("--top", metavar="K", min=1,
                                     help="Best trials that get learning curves.")] = 3,
    no_log: Annotated[bool, typer.Option("--no-log", metavar="",
                                         help="Do not log the report to the study's MLflow "
                                              "run.")] = False,
) -> None:
    """Write the study's dashboard, <report.dir>/<study>/index.html (self-contained, offline)."""

    def go():
        if _report_guide(study, storage, tracking_uri, out, no_log):
            return
        cfg, url, uri = _study_to_read(study, storage, tracking_uri)
        from .analyze import StudyNotFoundError
        from .inspection import best_trial_sections
        from .report import report_study

        try:
            extra = best_trial_sections(cfg.name, url, uri)  # [] when it kept no checkpoint
            path = report_study(cfg.name, url, uri, out or cfg.report.dir,
                                log_artifact=not no_log, top_k=top, extra=extra)
        except StudyNotFoundError as e:
            _fail(f"{e} (run it first)", 2)
        typer.echo(f"dashboard    {path}")

    _guard(go)


def _report_guide(study: str, storage: str | None, tracking_uri: str | None,
                  out: str | None, no_log: bool) -> bool:
    """Write the guide's page when STUDY names a guided study; True when it is only that.

    A study file or name with stage studies (``<name>/1-anything``...) gets
    ``<report.dir>/<name>/guide/index.html``; a plain study of the same name
    (``hpstudy run``) gets its own dashboard as well (False is returned).
    """
    from .analyze import guide_stages
    from .config import DEFAULT_STORAGE, from_dict, load_study, load_yaml_text
    from .names import ATTR_GUIDE_CONFIG, stage_study_name

    if Path(study).is_file() or study.endswith((".yaml", ".yml")):
        cfg = load_study(study)
        name, url = cfg.name, cfg.storage_url(storage)
    else:
        cfg, name = None, study
        url = storage or os.environ.get("HPSTUDY_STORAGE") or DEFAULT_STORAGE
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return False  # nothing stored yet (and reading must not create the file)
    found = guide_stages(name, url)
    if not found:
        return False
    import optuna

    from .report import report_guide

    studies = {s.study_name: s for s in optuna.get_all_study_summaries(url)}
    if cfg is None:  # the study file's config is kept with the stages: its stores and report dir
        text = studies[stage_study_name(name, found[0])].user_attrs.get(ATTR_GUIDE_CONFIG)
        cfg = from_dict(load_yaml_text(text), f"{name} (config stored in {url})")
    path = report_guide(name, url, cfg.tracking_uri(tracking_uri), out or cfg.report.dir,
                        log_artifact=not no_log)
    typer.echo(f"guide        {path}")
    return name not in studies  # a plain study of that name gets its dashboard too


@app.command()
def inspect(
    target: Annotated[str, typer.Argument(help="Study file or name (its best trial), or an MLflow run id.")],
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    out: Annotated[str | None, typer.Option("--out", metavar="DIR", help="Dashboards folder (default: the study's report.dir, else dashboards).")] = None,
    split: Annotated[str | None, typer.Option("--split", metavar="SPLIT", help="val or test (default: val; test when there is no validation split).")] = None,
    max_images: Annotated[int | None, typer.Option("--max-images", metavar="N", min=1, help="Inspect only the first N images of the split.")] = None,
    no_log: Annotated[bool, typer.Option("--no-log", metavar="", help="Do not log the page and its data to the run.")] = False,
) -> None:
    """Look inside a trained model: confusion matrix, per-class accuracy, the most confident
    mistakes, first-layer filters, class activation maps; writes <out>/<name>/index.html."""

    def go():
        from .analyze import StudyNotFoundError
        from .inspection import InspectError, is_run_id, subject_for_run, subject_for_study
        from .inspection import inspect as inspect_subject
        from .names import DEFAULT_REPORT_DIR, DEFAULT_TRACKING_URI, TRACKING_ENV

        if split not in (None, "val", "test"):
            _fail(f"--split {split}: expected val or test", 2)
        try:
            if is_run_id(target):
                uri = tracking_uri or os.environ.get(TRACKING_ENV) or DEFAULT_TRACKING_URI
                subject = subject_for_run(target, uri)
                name, folder = f"{subject.experiment}/inspect-{target[:8]}", out or DEFAULT_REPORT_DIR
            else:
                cfg, url, uri = _study_to_read(target, storage, tracking_uri)
                subject = subject_for_study(cfg.name, url, uri)
                name, folder = f"{cfg.name}/inspect", out or cfg.report.dir
            outcome = inspect_subject(subject, name=name, out_dir=folder, split=split,
                                      limit=max_images, log=not no_log)
        except (InspectError, StudyNotFoundError) as e:
            _fail(str(e), 2)
        insp = outcome.inspection
        split_name = "validation" if insp.split == "val" else "test"
        typer.echo(f"inspected    {subject.label}: accuracy {insp.accuracy:.4f} on "
                   f"{len(insp.labels)} {split_name} images")
        typer.echo(f"page         {outcome.folder / 'index.html'}")
        if outcome.logged:
            typer.echo(f"logged       run {outcome.run_id}, under inspection/")

    _guard(go)


@app.command()
def doctor(
    study: StudyArg,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    fix: Annotated[bool, typer.Option("--fix", metavar="",
                                      help="Repair what can be repaired.")] = False,
) -> None:
    """Check that the Optuna study and its MLflow runs agree; --fix repairs them.

    One run per trial, the same states, no RUNNING leftovers, no orphans, the
    study run's counts.
    """

    def go():
        cfg, url, uri = _study_to_read(study, storage, tracking_uri)
        from .search.doctor import doctor as examine

        try:
            findings = examine(cfg.name, url, uri, cfg.tracking.experiment, fix=fix)
        except KeyError:
            _fail(f"{study}: no study '{cfg.name}' in {url} (run it first)", 2)
        for f in findings:
            typer.echo(f.line())
        left = [f for f in findings if f.fixable and not f.fixed]
        if not findings:
            typer.echo(f"doctor       {cfg.name}: the study and its runs agree")
        else:
            typer.echo(f"doctor       {cfg.name}: {len(findings)} finding(s), "
                       f"{sum(f.fixed for f in findings)} fixed, {len(left)} left")
        if left:
            raise typer.Exit(1)

    _guard(go)


@app.command()
def ui(
    study: Annotated[str | None, typer.Argument(
        metavar="STUDY",
        help="Study file or name: its runs' URL is printed (default: every experiment).")] = None,
    tracking_uri: TrackingOpt = None,
    host: Annotated[str, typer.Option("--host", metavar="HOST",
                                      help="Bind address; 127.0.0.1 keeps it local (the UI has "
                                           "no login).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=1, max=65535,
                                      help="TCP port.")] = 5000,
) -> None:
    """Start the MLflow UI on the project's store and print the study's URL (Ctrl-C stops it)."""

    def go():
        from .track.ui import UIError, serve_ui

        try:
            code = serve_ui(study=study, tracking_uri=tracking_uri, host=host, port=port)
        except UIError as e:
            _fail(str(e), 1)
        if code:
            raise typer.Exit(code)

    _guard(go, trap=False)  # serve_ui stops its server on SIGINT, SIGTERM and SIGHUP itself


@app.command()
def dashboard(
    study: StudyArg,
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option("--host", metavar="HOST",
                                      help="Bind address; 127.0.0.1 keeps it local (the "
                                           "dashboard has no login).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", min=1, max=65535,
                                      help="TCP port.")] = 8080,
) -> None:
    """Start optuna-dashboard on the study's storage (live) and print its URL (Ctrl-C stops it).

    optuna-dashboard is optional: pip install optuna-dashboard.
    """

    def go():
        from .config import load_study
        from .search.dashboard import DashboardMissing, serve_dashboard
        from .track.ui import UIError

        if Path(study).is_file() or study.endswith((".yaml", ".yml")):
            cfg = load_study(study)  # reading a study needs no data
            name, url = cfg.name, cfg.storage_url(storage)
        else:  # a name: the study must be in the storage
            from .config import DEFAULT_STORAGE

            name = study
            url = storage or os.environ.get("HPSTUDY_STORAGE") or DEFAULT_STORAGE
        try:
            code = serve_dashboard(name, url, host=host, port=port)
        except DashboardMissing as e:
            _fail(str(e), 2)
        except UIError as e:
            _fail(str(e), 1)
        if code:
            raise typer.Exit(code)

    _guard(go, trap=False)  # the server is stopped on SIGINT, SIGTERM and SIGHUP by serve_dashboard


_ARGV: list[str] = []  # the command line, for the resume hint of an interrupted command


def _click_error_types() -> tuple[type[Exception], type[Exception]]:
    """(ClickException, UsageError) of the click that typer runs on.

    Typer 0.2x vendors click as ``typer._click``; its public ``BadParameter``
    derives from that click's ``UsageError`` and ``ClickException``, whatever
    the module is called.
    """
    mro = typer.BadParameter.__mro__
    click_exc = next(c for c in mro if c.__name__ == "ClickException")
    usage = next(c for c in mro if c.__name__ == "UsageError")
    return click_exc, usage


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    click_exc, usage_error = _click_error_types()
    _ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    try:
        code = app(args=argv, prog_name="hpstudy", standalone_mode=False)
    except usage_error as e:
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:  # `hpstudy` alone
            code = 0  # typer has printed the help already
        else:  # a bad flag or argument: one line, like every bad input
            verb = f"hpstudy {ctx.info_name}" if ctx is not None and ctx.parent else "hpstudy"
            typer.echo(f"error: {verb}: {e.format_message()} (see {verb} --help)", err=True)
            code = 2
    except click_exc as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        code = getattr(e, "exit_code", 1)
    except typer.Abort:
        code = 130
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
