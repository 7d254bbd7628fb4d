"""Run an experiment end to end: sweep (missing runs only) -> analysis from the store -> report.

Output directory contract (``/work/shared/README.md``)::

    DIR/results.json          tables as data, conclusions, config, environment, run list
    DIR/figures/<name>.png    and <name>.svg
    DIR/tables/<name>.csv     and <name>.md
    DIR/report.html           self-contained (images embedded), config + environment shown
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sgdlab.atomic import save_figure, write_whole
from sgdlab.claims import folder_lock
from sgdlab.errors import ConfigError, DataError, ReportInterrupted, UserError, make_output_dir
from sgdlab.experiments.analysis import Analysis, Conclusion, outside_regime
from sgdlab.experiments.procedures import get_analysis
from sgdlab.experiments.resources import PerRun
from sgdlab.experiments.resources import resolve as resolve_per_run
from sgdlab.experiments.spec import (REPORT_TAKES_A_FILE, ExperimentSpec, RunSpec,
                                    catalogue_name, expand_data_dir, grid_point,
                                    in_catalogue, load_experiment, load_yaml, needs_data_dir,
                                    resolve)
from sgdlab.experiments.sweep import (DONE, SweepReport, check_backend, check_options,
                                     load_runs, open_store, run_sweep, store_file,
                                     threads_per_worker)
from sgdlab.report.figures import close_figures, figure_title, open_figures, save_and_close
from sgdlab.report.tables import Table
from sgdlab.strict_json import finite_or_none, write_atomic

RESULTS = "results.json"
REPORT = "report.html"


@dataclass
class ExperimentResult:
    out_dir: Path
    results: dict[str, Any]
    sweep: SweepReport

    @property
    def report_path(self) -> Path:
        return self.out_dir / REPORT

    @property
    def ok(self) -> bool:
        return not self.results.get("incomplete", False)


def default_out_dir(spec: ExperimentSpec) -> Path:
    """``sgdlab-out/NAME-SCALE``, then ``-KEY=CHOICE`` for each reading not at its default:
    two readings never write over each other's report."""
    tail = "".join(f"-{k}={c}" for k, c in spec.changed_readings().items())
    return Path("sgdlab-out") / f"{spec.name}-{spec.scale}{tail}"


def environment(device: str = "cpu", workers: int = 1) -> dict[str, Any]:
    """This process: versions, host, device and threads, for a report with no stored run."""
    import numpy
    import torch

    import sgdlab

    env = {"python": sys.version.split()[0], "platform": platform.platform(),
           "torch": torch.__version__, "numpy": numpy.__version__,
           "sgdlab": getattr(sgdlab, "__version__", "0.1.0"), "device": device,
           "cpu_count": os.cpu_count(), "workers": workers,
           "torch_threads": torch.get_num_threads(),
           "hostname": platform.node()}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))     # cuda:1's, not 0's
    return env


# what each run records of where it ran (sgdlab.store.env.environment), in a report's order
RUN_ENVIRONMENT = ("python", "platform", "torch", "numpy", "sgdlab", "git_commit", "device",
                   "gpu", "cuda", "cpu_count", "torch_threads", "hostname")


def _report_environment(store_path: str, stored: list, device: str, workers: int | None
                        ) -> dict[str, Any]:
    """Where the report's runs ran, as each run recorded it (a sweep's run records the
    environment of the worker that ran it: another machine's, a GPU's): one value where the
    runs agree, the sorted distinct values where they differ. Not this process': it may be a
    driver without the runs' GPU, or a later ``sgdlab report``. A GPU is named for runs that
    used one. With no stored run, the sweep's settings and this process (``from_runs`` 0)."""
    envs = []
    if stored:
        store = open_store(store_path)
        try:
            envs = [store.get_run(r.run_id).get("env") or {} for r in stored]
        finally:
            store.close()
        envs = [e for e in envs if isinstance(e, dict)]
    if not envs:
        w = workers or 1
        return {**environment(device, w), "torch_threads": threads_per_worker(w),
                "from_runs": 0}
    out: dict[str, Any] = {}
    for key in RUN_ENVIRONMENT:
        on_gpu = key in ("gpu", "cuda")
        seen = {json.dumps(e[key], sort_keys=True): e[key] for e in envs
                if e.get(key) is not None
                and not (on_gpu and not str(e.get("device", "")).startswith("cuda"))}
        if seen:
            values = sorted(seen.values(), key=_in_order)
            out[key] = values[0] if len(values) == 1 else values
    return {**out, "workers": workers, "from_runs": len(envs)}


def _in_order(value: Any) -> tuple:
    """Numbers by size, then anything else by its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return 0, value, ""
    return 1, 0, json.dumps(value, sort_keys=True)


def require_device(device: str) -> None:
    """A :class:`UserError` when ``device`` (cpu, cuda or cuda:N, as ``--device`` gives it) is
    not on this machine: no CUDA, or fewer CUDA devices than its index needs."""
    from sgdlab.config.run import missing_device

    problem = missing_device(device)
    if problem is not None:
        raise UserError(f"--device {device} requested but {problem}")


def prepare(name_or_path: str | Path, *, scale: str, device: str, data_dir: str | None,
            backend: str | None, cpus_per_run: float | None, gpus_per_run: float | None,
            readings: dict[str, str] | None, workers: int | None, address: str | None
            ) -> tuple[ExperimentSpec, list[RunSpec], str, PerRun | None, PerRun | None]:
    """The experiment resolved at ``scale``, its runs, and where they would execute: ``(spec,
    runs, backend, cpus_per_run, gpus_per_run)``, the resources with where each came from
    (:func:`sgdlab.experiments.resources.resolve`; None on the local backend, and where
    nothing sets them); the checks a run makes before its sweep (a real run and a dry run
    fail alike)."""
    spec = load_experiment(name_or_path, scale, readings)
    backend = backend or os.environ.get("SGDLAB_BACKEND") or "local"
    # the local backend refuses only the flags: the variables and resources: are for Ray
    cpus_given, gpus_given = cpus_per_run, gpus_per_run
    cpus = resolve_per_run("cpus", cpus_per_run, spec.resources)
    gpus = resolve_per_run("gpus", gpus_per_run, spec.resources)
    if backend == "local":
        require_device(device)
    if needs_data_dir(spec) and data_dir is None:
        raise ConfigError(f"{spec.name} at scale {scale!r} reads the paper's dataset: pass "
                          "--data-dir DIR")
    if data_dir is not None and not Path(expand_data_dir(data_dir)).is_dir():
        raise UserError(f"--data-dir {data_dir!r} is not a directory")
    runs = spec.expand(data_dir=data_dir)
    # contradictory options fail before the output folder is made
    check_options(workers=workers, backend=backend, address=address, gpus_per_run=gpus_given,
                  cpus_per_run=cpus_given)
    if backend == "local":      # unused there; run_sweep would refuse GPUs as the flag
        cpus = gpus = None
    return spec, runs, backend, cpus, gpus


def foreign_out_dir(out: Path, spec: ExperimentSpec) -> str | None:
    """Why ``out`` must not take ``spec``'s report, or None: it holds a training run (its
    results.json and checkpoints are that run's) or another command's results.json, which this
    one would overwrite in part (results.json, report.html) and mix with (figures, tables).
    The same experiment's folder is simply rewritten."""
    from sgdlab.errors import results_holder

    holder = results_holder(out)
    if holder is None or holder == ("experiment", spec.name):
        return None
    if holder[0] == "train":
        return (f"--out {out} holds a training run (sgdlab train): this report would overwrite "
                "its results.json; choose another folder")
    what = f"the report of {holder[1]}" if holder[0] == "experiment" else "another results.json"
    return (f"--out {out} holds {what}: this report would overwrite and mix with it; choose "
            "another folder")


def run_experiment(name_or_path: str | Path, *, scale: str = "cpu",
                   out_dir: str | Path | None = None, store_path: str | None = None,
                   workers: int | None = None,
                   device: str = "cpu", data_dir: str | None = None, progress=print,
                   train_progress: bool = False, backend: str | None = None,
                   address: str | None = None, cpus_per_run: float | None = None,
                   gpus_per_run: float | None = None,
                   readings: dict[str, str] | None = None,
                   command: str | None = None,
                   tensorboard: str | os.PathLike | None = None) -> ExperimentResult:
    """Execute (the missing runs of) an experiment and write its report. See module docstring.

    ``readings`` (``{reading: choice}``) picks how the paper's ambiguous passages are read;
    the file's defaults for the readings not given.

    ``backend`` (default ``$SGDLAB_BACKEND`` or ``local``), ``address``, ``cpus_per_run`` and
    ``gpus_per_run`` choose where the runs execute (:func:`sgdlab.experiments.sweep.run_sweep`);
    the resources default to ``$SGDLAB_CPUS_PER_RUN`` / ``$SGDLAB_GPUS_PER_RUN``, then to the
    experiment file's ``resources``. ``command``: the command line that continues the sweep,
    recorded with each run (``sgdlab runs list`` shows it for a stopped run). ``tensorboard``:
    a folder where every run's metrics are written live as TensorBoard event files."""
    data_dir = expand_data_dir(data_dir)
    spec, runs, backend, cpus_per_run, gpus_per_run = prepare(
        name_or_path, scale=scale, device=device, data_dir=data_dir, backend=backend,
        cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, readings=readings,
        workers=workers, address=address)
    from sgdlab.experiments.plan import claim_problems

    # a misspelt group or metric in a claim, before the sweep: the report would find it
    # only after all the training
    misnamed = claim_problems(spec, runs)
    if misnamed:
        raise ConfigError("\n".join(misnamed))
    if tensorboard is not None:
        from sgdlab.train.tensorboard import writer_class

        writer_class()          # the package, before the store and the folder are made
    from sgdlab.store import default_store_path

    if Path(store_path or default_store_path()).is_file():
        # an unreadable store, too, fails before the folder is made; closed at once, so its
        # WAL is not folded into the file later by whichever reader comes next
        open_store(store_path).close()
    # Ray missing or unreachable, too, before the store and the folder are made (it starts
    # with the first run); the sweep and its backend take the answer, not probing again
    ray_checked = check_backend(backend, runs, store_path, address)
    # a data file missing for the runs to execute: said once (as the dry run says it), before
    # the store records a failed run and the folder is made, not by the first run's failure;
    # on Ray the runs read the data of the nodes, which this machine need not hold
    if backend == "local":
        from sgdlab.experiments.plan import check_data

        check_data(runs, store_path)
    # the report's folder, before the runs: a sweep of hours must not end on a path it
    # cannot write to
    out = Path(out_dir) if out_dir is not None else default_out_dir(spec)
    foreign = foreign_out_dir(out, spec)
    if foreign:
        raise UserError(foreign)
    if tensorboard is not None:     # so is the TensorBoard folder (the first run failed on it)
        make_output_dir(tensorboard, "--tensorboard")
    out = make_output_dir(out)
    say = progress or (lambda s: None)
    tag = "".join(f", {k}={c}" for k, c in spec.changed_readings().items())
    say(f"{spec.name} v{spec.version} [{scale}{tag}]: {len(runs)} runs — {spec.title}")
    if tensorboard is not None:
        say(f"each run's metrics live in TensorBoard: tensorboard --logdir {tensorboard}")
    rep = run_sweep(runs, store_path=store_path, workers=workers, device=device,
                    progress=progress, train_progress=train_progress, backend=backend,
                    address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                    source=spec.source, command=command, tensorboard=tensorboard,
                    ray_checked=ray_checked)
    try:
        store = open_store(store_path)
        path = str(store_file(store))
        store.close()
        results = build_report(spec, out, store_path=path, device=device,
                               workers=workers or 1, data_dir=data_dir, sweep=rep)
    except KeyboardInterrupt as e:
        raise ReportInterrupted(*e.args) from None
    return ExperimentResult(out, results, rep)


def analyze(spec: ExperimentSpec, *, store_path: str, data_dir: str | None = None
            ) -> tuple[Analysis, list, list]:
    from sgdlab.experiments.plan import option_problems

    # the options as a run checks them before training: the analysis would ignore a misspelt
    # one, or fail on a mistyped or missing one with Python's own error
    refused = option_problems(spec)
    if refused:
        raise ConfigError("\n".join(refused))
    runs = _report_runs(spec, store_path, data_dir if needs_data_dir(spec) else None)
    stored, missing = load_runs(runs, store_path=store_path)
    fn = get_analysis(spec.analysis)
    if not stored:
        analysis = Analysis(notes=["no finished runs in the store: nothing to analyse"])
    else:
        before = open_figures()
        try:
            analysis = fn(spec, stored)
        except Exception as e:  # noqa: BLE001
            # the figures it drew before it failed are nobody's: pyplot would keep them
            close_figures(open_figures() - before)     # (numbers: plt.close takes them)
            if not missing:
                raise
            analysis = Analysis(notes=[f"analysis needs the missing runs: {type(e).__name__}: {e}"])
    analysis.conclusions = outside_regime(analysis.conclusions, spec.outside_regime)
    return analysis, stored, missing


def _report_runs(spec: ExperimentSpec, store_path: str, data_dir: str | None
                 ) -> list[RunSpec]:
    """The runs of ``spec`` whose stored records a report reads. A data file of its own
    (``dataset: {file: PATH}``) that no longer stands at PATH is keyed by the ``sha256`` the
    store's runs of the experiment at its scale recorded of it (the newest run's, where the
    file changed between runs): the report reads no data."""
    try:
        return spec.expand(data_dir=data_dir)
    except DataError:
        stored: dict[str, str] = {}
        # scale= keeps the runs whose (decoded) config is a mapping naming that scale
        for row in open_store(store_path).list_runs(experiment=spec.name, scale=spec.scale):
            ds = (row["config"].get("params") or {}).get("dataset")
            if (row.get("status") in DONE and isinstance(ds, dict)
                    and isinstance(ds.get("file"), str) and isinstance(ds.get("sha256"), str)):
                stored[ds["file"]] = ds["sha256"]       # oldest first: the newest stays
        if not stored:
            raise
        return spec.expand(data_dir=data_dir, stored_files=stored)


def _other_settings(spec: ExperimentSpec, store_path: str) -> list[str]:
    """The ``--scale`` and ``--reading`` options, other than ``spec``'s, under which the store
    holds finished runs of its experiment (``sgdlab report NAME`` reads the ``cpu`` scale and
    the default readings unless told otherwise). A run's readings are those of the
    ``sgdlab run`` command that recorded it: the options to give, readings combined
    (``--reading a=x --reading b=y``) too, which ``readings.runs_readings`` (each choice off
    its default alone, matched by run key) cannot name."""
    import shlex

    mine = (spec.scale, tuple(spec.changed_readings().items()))
    found = set()
    for row in open_store(store_path).list_runs(experiment=spec.name):
        cfg = row.get("config") or {}
        if isinstance(cfg, str):
            cfg = json.loads(cfg)
        if row.get("status") not in DONE or not isinstance(cfg, dict) or not cfg.get("scale"):
            continue
        try:
            words = shlex.split(str(cfg.get("command") or ""))
        except ValueError:      # a command that is no shell line names no reading
            words = []
        # a run keyed as this entry's may be another's command (``same_as``): its readings
        # that this entry lacks are no setting of this entry
        readings = tuple(kc for kc in (words[i + 1].partition("=")[::2]
                                       for i, w in enumerate(words[:-1]) if w == "--reading")
                         if kc[0] in spec.readings)
        found.add((str(cfg["scale"]), readings))
    # no --reading, where the one given took some: the defaults, said (dropping it is the fix)
    plain = " (the default readings)" if mine[1] else ""
    return [" ".join([f"--scale {scale}"] + [f"--reading {k}={c}" for k, c in readings])
            + ("" if readings else plain) for scale, readings in sorted(found - {mine})]


def build_report(spec: ExperimentSpec, out: Path, *, store_path: str, device: str = "cpu",
                 workers: int | None = 1, data_dir: str | None = None,
                 sweep: SweepReport | None = None, require_runs: bool = False) -> dict[str, Any]:
    """Analyse the stored runs of ``spec`` and write results.json, figures, tables, HTML
    (``workers``: how many ran the runs, None where that is not known); with
    ``require_runs``, a ``UserError`` instead when none of its runs is in the store (nothing
    written: an existing report stays as it was)."""
    analysis, stored, missing = analyze(spec, store_path=store_path, data_dir=data_dir)
    try:
        return _report_analysis(spec, out, analysis, stored, missing, store_path=store_path,
                                device=device, workers=workers, data_dir=data_dir,
                                sweep=sweep, require_runs=require_runs)
    finally:
        # also when a report is refused or fails part way: pyplot holds every figure until
        # it is closed, and `run --paper all` reports entry after entry in one process
        close_figures(analysis.figures)


def _report_analysis(spec: ExperimentSpec, out: Path, analysis, stored: list, missing: list,
                     *, store_path: str, device: str, workers: int | None,
                     data_dir: str | None, sweep: SweepReport | None,
                     require_runs: bool) -> dict[str, Any]:
    """:func:`build_report`'s work once ``analysis`` is computed."""
    if require_runs and missing and not stored:
        others = _other_settings(spec, store_path)
        taken = "".join(f", {k}={c}" for k, c in spec.changed_readings().items())
        raise UserError(
            f"none of the {len(missing)} runs of {spec.name!r} at scale {spec.scale}{taken} is "
            f"in the run store {store_path!r}: nothing to report (a report reads stored runs; "
            + (f"the store holds runs of it under {', and under '.join(others)}: give "
               "those options)"
               if others else
               "run the experiment with `sgdlab run`, or give --store the store it used)"))
    out.mkdir(parents=True, exist_ok=True)
    # two reports written into one folder at once take turns: one's files are not mixed
    # with, or removed as stale by, the other's
    with folder_lock(out):
        return _write_report(spec, out, analysis, stored, missing, store_path=store_path,
                             device=device, workers=workers, data_dir=data_dir, sweep=sweep)


def _write_report(spec: ExperimentSpec, out: Path, analysis, stored: list, missing: list, *,
                  store_path: str, device: str, workers: int | None, data_dir: str | None,
                  sweep: SweepReport | None) -> dict[str, Any]:
    """Write the report of ``analysis`` into ``out`` (under :func:`folder_lock`)."""
    (out / "figures").mkdir(exist_ok=True)
    (out / "tables").mkdir(exist_ok=True)
    replaced = _output_files(out)
    fig_records = []
    for name, fig in analysis.figures:
        png, svg = out / "figures" / f"{name}.png", out / "figures" / f"{name}.svg"
        # figures are laid out by their makers (tight_layout / constrained): a "tight" bbox
        # would cost one more full draw per file
        save_figure(fig, png, dpi=100)
        title = figure_title(fig)       # read before the figure is closed
        save_and_close(fig, svg)
        fig_records.append({"name": name, "title": title, "png": f"figures/{name}.png",
                            "svg": f"figures/{name}.svg"})
    for t in analysis.tables:
        write_whole(out / "tables" / f"{t.name}.csv", t.to_csv())
        write_whole(out / "tables" / f"{t.name}.md", t.to_markdown())
    written = _output_files(out, analysis.tables, [n for n, _ in analysis.figures])
    for stale in replaced - written:
        stale.unlink(missing_ok=True)
    declared_missing = []
    for kind, produced in (("tables", {t.name for t in analysis.tables}),
                           ("figures", {n for n, _ in analysis.figures})):
        for n in spec.outputs.get(kind, []):
            if n not in produced:
                declared_missing.append(f"{kind}/{n}")
    results = {
        "experiment": spec.describe(),
        "scale": spec.scale,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "conclusions": [c.to_json() for c in analysis.conclusions],
        "tables": [t.to_json() for t in analysis.tables],
        "figures": fig_records,
        "notes": list(analysis.notes),
        # each run's point of the grid by its dotted keys, so that a table of one's own needs
        # no parsing of labels
        "runs": [{"key": r.key, "run_id": r.run_id, "label": r.label, "seed": r.seed,
                  "grid": grid_point(r.params, spec.grid),
                  "status": r.status, "message": r.message, "summary": r.summary}
                 for r in stored],
        "missing_runs": [r.run_name for r in missing],
        "missing_outputs": declared_missing,
        "incomplete": bool(missing),
        "sweep": None if sweep is None else {
            "executed": len(sweep.executed), "skipped": len(sweep.skipped),
            "failed": [{"run": n, "message": m} for n, m in sweep.failed],
            "seconds": round(sweep.seconds, 2)},
        # absolute: `sgdlab report DIR` reads them from wherever it is started
        "store": os.path.abspath(store_path),
        "data_dir": None if data_dir is None else os.path.abspath(expand_data_dir(data_dir)),
        "config": {"file": spec.raw, "source": spec.source,
                   "resolved": spec.resolved_config(),
                   **_file_yaml(spec.raw)},
        "environment": _report_environment(store_path, stored, device, workers),
        "command": run_command(spec, out, store_path=store_path, data_dir=data_dir,
                               device=device),
    }
    # whole or not at all: a truncated file in place of the previous report's could not be
    # read by `sgdlab report DIR`
    write_atomic(out / RESULTS, results, indent=1, default=str)
    from sgdlab.report.html import write_html

    write_html(results, out)
    return results


def run_command(spec: ExperimentSpec, out: Path, *, store_path: str,
                data_dir: str | None = None, device: str = "cpu") -> str:
    """The ``sgdlab run`` command line that writes this report again into ``out``: the
    entry by name (a catalogue file) or ``--config`` with its file, the scale, each reading
    off its default, the store and the data folder, paths absolute. Its runs are in the
    store, so it trains only those the store lacks."""
    import shlex

    what = [spec.name] if spec.catalogued else ["--config", os.path.abspath(spec.source)]
    words = ["sgdlab", "run", *what, "--scale", spec.scale]
    for key, choice in spec.changed_readings().items():
        words += ["--reading", f"{key}={choice}"]
    if data_dir is not None:
        words += ["--data-dir", os.path.abspath(expand_data_dir(data_dir))]
    if device != "cpu":
        words += ["--device", device]
    words += ["--store", os.path.abspath(store_path), "--out", os.path.abspath(out)]
    return shlex.join(words)


def _output_files(out: Path, tables: list[Table] | None = None,
                  figures: list[str] | None = None) -> set[Path]:
    """The files of a report's tables and figures; without ``tables`` and ``figures``, those
    the report now in ``out`` wrote (by its results.json): a report rewritten with fewer
    outputs removes these, not files of the folder it did not write."""
    if tables is None:
        try:
            old = json.loads((out / RESULTS).read_text())
            tables = [t["name"] for t in old["tables"]]
            figures = [f["name"] for f in old["figures"]]
        except (OSError, ValueError, KeyError, TypeError):
            return set()
    else:
        tables = [t.name for t in tables]
    names = [("tables", n, ext) for n in tables for ext in ("csv", "md")]
    names += [("figures", n, ext) for n in figures or [] for ext in ("png", "svg")]
    # names are read from a file: one with a path in it is not a file this report wrote
    return {out / kind / f"{n}.{ext}" for kind, n, ext in names
            if isinstance(n, str) and n and Path(n).name == n and n not in (".", "..")}


def _file_yaml(raw: dict[str, Any]) -> dict[str, str]:
    """``{"file_yaml": the experiment file as YAML}`` when it holds a non-finite number,
    which results.json writes as null: the run keys are made with the number, so a rebuild
    reads the file from this copy (``{}`` otherwise)."""
    if finite_or_none(raw) == raw:
        return {}
    return {"file_yaml": yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)}


def _recorded_file(config: dict[str, Any]) -> dict[str, Any]:
    """The experiment file recorded in results.json's ``config``."""
    if "file_yaml" not in config:
        return config["file"]
    return load_yaml(config["file_yaml"])


def _experiment_results(path: Path) -> dict[str, Any]:
    """The results.json of an experiment's output folder, or a :class:`UserError` saying what
    else the file is (a training run's, a truncated one)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}; rebuild it with `sgdlab run` on the same "
                        "experiment and scale (finished runs are taken from the store)") from None
    config = old.get("config") if isinstance(old, dict) else None
    if not (isinstance(config, dict) and isinstance(config.get("file"), dict) and "scale" in old):
        what = ("a training run's (sgdlab train; see `sgdlab runs show`)"
                if isinstance(old, dict) and "run_id" in old else "not an experiment's")
        raise UserError(f"{path} is {what} results.json: `sgdlab report` takes the output "
                        "folder of `sgdlab run` or an experiment name")
    # a hand-edited file: the rebuild reads these keys' entries
    for key, holds in (("experiment", "name, version, readings, ..."),
                       ("environment", "versions, host, workers, ...")):
        value = old.get(key)
        if value is not None and not isinstance(value, dict):
            raise UserError(f"{path}: key {key!r} is {type(value).__name__} {value!r}, not a "
                            f"mapping ({holds}); rebuild the file with `sgdlab run` on the "
                            "same experiment and scale")
    readings = (old.get("experiment") or {}).get("readings")
    if readings is not None and not (isinstance(readings, dict) and all(
            isinstance(r, dict) and "choice" in r for r in readings.values())):
        raise UserError(f"{path}: key 'experiment.readings' is not a mapping of reading to "
                        "{choice: ...}; rebuild the file with `sgdlab run` on the same "
                        "experiment and scale")
    return old


def check_recorded_choices(folder: str | Path, *, scale: str | None = None,
                           readings: dict[str, str] | None = None) -> dict[str, Any]:
    """The results.json of the report in ``folder``, after refusing ``readings`` and a
    ``scale`` other than the recorded one: the report is rebuilt at the scale and readings it
    records (``--scale`` and ``--reading`` choose for an experiment name)."""
    t = Path(folder)
    old = _experiment_results(t / RESULTS)
    # what `sgdlab report` takes for it: the catalogue name, or the experiment's own file
    name = (old.get("experiment") or {}).get("name", "NAME")
    source = old["config"].get("source")
    if isinstance(source, str) and not in_catalogue(source):
        name = source
    if readings:
        wanted = " ".join(f"--reading {k}={c}" for k, c in readings.items())
        raise UserError(f"--reading chooses for an experiment name; {t} holds a report "
                        f"whose readings are recorded (`sgdlab report {name} --scale "
                        f"{scale or old['scale']} {wanted}` rebuilds that reading's "
                        "report from the runs `sgdlab run` stored for it)")
    if scale is not None and scale != old["scale"]:
        # was ignored: the folder's own scale was rebuilt, not the one asked for
        raise UserError(f"--scale {scale} chooses for an experiment name; {t} holds a "
                        f"report at scale {old['scale']} (`sgdlab report {name} --scale "
                        f"{scale}` rebuilds the {scale} one)")
    return old


def rebuild(target: str | Path, *, scale: str | None = None, store_path: str | None = None,
            out_dir: str | Path | None = None, data_dir: str | None = None,
            readings: dict[str, str] | None = None) -> tuple[Path, dict]:
    """Rebuild a report from the store: ``target`` is an output directory holding
    results.json (its recorded config, scale, readings and store are reused; a ``scale``
    other than the recorded one is refused) or an experiment name (at ``scale``, default
    ``cpu``, under ``readings``)."""
    t = Path(target)
    recorded = False        # the store is the one TARGET's results.json names
    workers = None          # how many ran the runs: known from an earlier report only
    if (t / RESULTS).is_file():
        old = check_recorded_choices(t, scale=scale, readings=readings)
        workers = (old.get("environment") or {}).get("workers")
        taken = {k: r["choice"]
                 for k, r in ((old.get("experiment") or {}).get("readings") or {}).items()}
        spec = resolve(_recorded_file(old["config"]), old["scale"],
                       source=old["config"].get("source", str(t)), readings=taken)
        recorded = store_path is None and old.get("store") is not None
        store_path = store_path or old.get("store")
        data_dir = expand_data_dir(data_dir) or old.get("data_dir")
        out = Path(out_dir) if out_dir else t
    elif t.is_dir() and not any(t.iterdir()):
        # `sgdlab run` makes its folder before the sweep: one stopped there left it empty
        raise UserError(f"{str(t)!r} holds no report yet (a `sgdlab run` stopped before "
                        "writing it?): run the experiment again, which runs only what the "
                        "store lacks, or report the runs stored so far with `sgdlab report "
                        f"NAME --scale SCALE --store PATH --out {t}`")
    elif t.is_dir():
        raise UserError(f"{str(t)!r} has no {RESULTS}: not an experiment output directory")
    elif not t.exists() and (os.sep in str(target) or "/" in str(target)):
        raise UserError(f"{str(t)!r}: no such directory or file (a report is rebuilt from an "
                        f"output directory or a catalogue name, and {REPORT_TAKES_A_FILE})")
    else:
        if not t.exists() and not str(target).endswith((".yaml", ".yml")):
            # a mistyped output folder as likely as an experiment name
            catalogue_name(str(target), or_folder=True)
        spec = load_experiment(str(target), scale or "cpu", readings)
        out = Path(out_dir) if out_dir else default_out_dir(spec)
    if store_path is None:      # not opened: that would make an empty store to look into
        from sgdlab.store import default_store_path
        store_path = str(default_store_path())
    if not Path(store_path).is_file():
        where = f" (the store {t / RESULTS} records)" if recorded else ""
        from sgdlab.store import first_run_hint, folder_hint
        # a catalogue name in a fresh folder: the command that runs it writes the report too
        chosen = "".join(f" --reading {k}={c}" for k, c in spec.changed_readings().items())
        record = (None if recorded else f"`sgdlab run {spec.name} --scale {spec.scale}"
                  f"{chosen}` runs it and writes its report")
        raise UserError(f"no run store at {store_path}{where}: a report reads its runs from "
                        "the store they were run into; give that with --store PATH"
                        f"{folder_hint(store_path)}{first_run_hint(store_path, record)}")
    foreign = foreign_out_dir(out, spec)
    if foreign:
        raise UserError(foreign)
    results = build_report(spec, out, store_path=store_path, data_dir=data_dir,
                           require_runs=True, workers=workers)
    return out, results


__all__ = ["Analysis", "Conclusion", "ExperimentResult", "Table", "build_report",
           "check_recorded_choices", "rebuild", "require_device", "run_experiment"]
