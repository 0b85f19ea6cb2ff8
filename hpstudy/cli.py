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

app = typer.Typer(
    name="hpstudy",
    help="Hyperparameter studies on image classifiers (Optuna + Lightning + MLflow + Plotly).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StudyArg = Annotated[str, typer.Argument(help="Study file (YAML) or, where noted, a study name.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set train.lr=0.01 (repeatable)."),
]
StorageOpt = Annotated[
    str | None, typer.Option("--storage", help="Optuna storage URL (default sqlite:///mlruns/optuna.db).")
]
TrackingOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default sqlite:///mlruns/mlflow.db).")
]


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
    from .config import ConfigError
    from .data import DatasetError
    from .models import UnknownModelError

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
    except (ConfigError, DatasetError, UnknownModelError) as e:
        _fail(str(e), 2)
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
        if os.environ.get("HPSTUDY_DEBUG"):
            traceback.print_exc()
        _fail(f"{type(e).__name__}: {e}", 1)


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
            typer.echo("best test    " + ", ".join(f"{k} {v:.4f}" for k, v in s.best_test.items()))
        typer.echo("best params  " + ", ".join(f"{k}={_fmt(v)}" for k, v in s.best_params.items()))
        typer.echo(f"best run     {s.best_run_id}")
    else:
        typer.echo("best value   none (no trial completed)")
    typer.echo(f"study run    {s.parent_run_id} (experiment {s.experiment_id})")
    typer.echo(f"optuna       {s.storage}")
    typer.echo(f"mlflow       {s.tracking_uri}   (open with: hpstudy ui)")
    if s.registered_model:
        typer.echo(f"best model   {s.registered_model}")
    if s.report_path:
        typer.echo(f"dashboard    {s.report_path}")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command()
def run(
    study: StudyArg,
    n_trials: Annotated[int | None, typer.Option("--n-trials", min=1, help="Trials to run now.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", min=0, help="Seconds before no new trial starts.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Trials in parallel (processes).")] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    set_: SetOpt = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the dashboard at the end.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Create or resume a study and run its trials; ends with the best trial."""

    def go():
        cfg = load_checked(study, set_)
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
    n_trials: Annotated[int | None, typer.Option("--n-trials", min=1, help="Trials this worker runs.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", min=0)] = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Join a running study from another process or machine (shared storage)."""

    def go():
        cfg = resolve_study(study, set_, storage)
        from .api import preflight
        from .search import run_study
        from .search.parallel import with_worker_seed

        preflight(cfg, storage=storage, tracking_uri=tracking_uri, source=study)
        # a seed of its own: workers sharing the study's seed would propose the same trials
        summary = run_study(with_worker_seed(cfg), n_trials=n_trials, timeout=timeout,
                            storage=storage, tracking_uri=tracking_uri, progress=not quiet)
        _print_summary(summary)

    _guard(go)


@app.command()
def train(
    study: StudyArg,
    set_: SetOpt = None,
    tracking_uri: TrackingOpt = None,
) -> None:
    """One run with fixed hyperparameters (the study file's values plus --set)."""

    def go():
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
        "--budget-epochs", min=1, help="Total training epochs of all stages (default: "
                                       "guide.budget_epochs, else search.n_trials x "
                                       "train.max_epochs).")] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    set_: SetOpt = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the guide's page at the end.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
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
    ablation: Annotated[str, typer.Argument(help="Ablation file (YAML), e.g. studies/ablations/quick_digits.yaml.")],
    tracking_uri: TrackingOpt = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a base-config key for every cell (--set train.max_epochs=2), "
                                   "or the ablation's seeds/design/metric (--set seeds=[0,1]); repeatable."),
    ] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the ablation report.")] = False,
) -> None:
    """Train every cell x seed of an ablation (finished ones are kept), then print cell
    means with 95% CIs, effects and interactions, and write the report."""

    def go():
        from ._stores import check_tracking
        from .analyze.ablation import format_ablation
        from .api import ablate as run_ablation
        from .search.ablation import check_data, load_ablation

        plan = load_ablation(ablation, set_)
        check_data(plan)  # a missing data set is exit 2 before any run is written
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
def models(
    in_chans: Annotated[int, typer.Option("--in-chans", min=1)] = 3,
    num_classes: Annotated[int, typer.Option("--num-classes", min=2)] = 10,
    input_size: Annotated[int | None, typer.Option("--input-size", min=1, help="Default: each model's native size.")] = None,
    pattern: Annotated[str | None, typer.Argument(help="Shell pattern, e.g. 'preact*'.")] = None,
) -> None:
    """The model registry with parameter counts."""

    def go():
        from .models import models_table

        rows = models_table(in_chans=in_chans, num_classes=num_classes, input_size=input_size)
        if pattern:
            import fnmatch

            rows = [r for r in rows if fnmatch.fnmatch(r["name"], pattern)]
        if not rows:
            _fail(f"no model matches '{pattern}'", 2)
        typer.echo(f"{'name':22s} {'family':14s} {'params':>12s} {'native':>6s} {'min':>4s}  description")
        for r in rows:
            typer.echo(f"{r['name']:22s} {r['family']:14s} {r['params']:>12,d} "
                       f"{r['native_size']:>6d} {r['min_size']:>4d}  {r['description']}")

    _guard(go)


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
    typer.Option("--threshold", help="Override a diagnosis threshold: --threshold fit_acc=0.6 "
                                     "(repeatable; see hpstudy.analyze.Thresholds)."),
]


@app.command()
def diagnose(
    study: StudyArg,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    threshold: ThresholdOpt = None,
) -> None:
    """Read every trial's learning curves: verdict, evidence, advice, and a study summary."""

    def go():
        cfg, url, uri = _study_to_read(study, storage, tracking_uri)
        from .analyze import StudyNotFoundError, diagnose_study, format_text

        try:
            table, summary = diagnose_study(cfg.name, url, uri, **_thresholds(threshold))
        except StudyNotFoundError as e:
            _fail(f"{e} (run it first)", 2)
        typer.echo(format_text(table, summary))

    _guard(go)


@app.command()
def report(
    study: StudyArg,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    out: Annotated[str | None, typer.Option("--out", help="Dashboards folder (default: the study's report.dir).")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Best trials that get learning curves.")] = 3,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not log the report to the study's MLflow run.")] = False,
) -> None:
    """Write the study's dashboard, <report.dir>/<study>/index.html (self-contained, offline)."""

    def go():
        if _report_guide(study, storage, tracking_uri, out, no_log):
            return
        cfg, url, uri = _study_to_read(study, storage, tracking_uri)
        from .analyze import StudyNotFoundError
        from .report import report_study

        try:
            path = report_study(cfg.name, url, uri, out or cfg.report.dir,
                                log_artifact=not no_log, top_k=top)
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
def doctor(
    study: StudyArg,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    fix: Annotated[bool, typer.Option("--fix", help="Repair what can be repaired.")] = False,
) -> None:
    """Check that the Optuna study and its MLflow runs agree (one run per trial, states,
    no RUNNING leftovers, no orphans, the study run's counts); --fix repairs them."""

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
    study: Annotated[str | None, typer.Argument(help="Study file or name (for its experiment URL).")] = None,
    tracking_uri: TrackingOpt = None,
    host: Annotated[str, typer.Option("--host", help="Bind address; 127.0.0.1 keeps it local.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 5000,
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
            typer.echo(ctx.get_help())
            code = 0
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
