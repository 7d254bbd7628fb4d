"""``sgdlab train CONFIG``: run a config file (or a packaged config by name)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

# the exit status of a run that ended diverged (a non-finite loss or measurement): its
# results are stored, as a finished run's, but a script must not take it for one; 1 stays
# what a failure (a traceback) exits with, 2 a refused input, 130 an interrupt
EXIT_DIVERGED = 3
EXIT_STATUSES = (f"exit status: 0 the run finished, {EXIT_DIVERGED} it diverged (its results "
                 "and the step it diverged at are stored and printed), 2 bad input (a config, "
                 "an option), 130 interrupted (continue with the command printed)")


def register(subparsers) -> None:
    from sgdlab.cli._plugins import add_plugin_option

    names = _packaged_names()
    p = subparsers.add_parser(
        "train", help="train a model from a run config (YAML/TOML or a packaged name)",
        description="Train from a run config. CONFIG is a .yaml/.toml file or the name of a "
                    f"packaged config ({', '.join(names) or 'none'}; `sgdlab train "
                    "NAME --print-config` shows one). The run is recorded in the run store; "
                    "results.json, the learning-curve plot and checkpoints go to --out "
                    "(default: a folder named after the run id next to the store).",
        epilog=EXIT_STATUSES)
    p.unknown_option_hint = config_key_hint
    config = p.add_argument("config", metavar="CONFIG",
                            help="a .yaml/.toml run config or a packaged config's name")
    # what a first `sgdlab train` is told (argparse named CONFIG alone); digits-mlp is the
    # README's first run
    first = "digits-mlp" if "digits-mlp" in names else next(iter(names), None)
    config.missing_hint = "a .yaml/.toml run config file" if first is None else (
        f"a packaged config's name ({', '.join(names)}), as in `sgdlab train {first}`, or a "
        f".yaml/.toml run config file, as `sgdlab train {first} --print-config` prints one")
    p.add_argument("--out", metavar="DIR", help="run folder (default: <store folder>/<run id>)")
    p.add_argument("--store", metavar="PATH",
                   help="run store (default: config's store.path, $SGDLAB_STORE, or "
                        "./sgdlab-runs/runs.sqlite)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override a config value, e.g. --set train.epochs=5 --set "
                        "optimizer.lr=0.01 --set 'measure[0].every=5' (repeatable; values "
                        "are YAML)")
    p.add_argument("--init-from", metavar="RUN_OR_PATH",
                   help="warm start: the model starts from the weights and buffers of this run "
                        "id (or unique prefix), run folder (its last checkpoint) or checkpoint "
                        "file; the optimizer, schedule and step count start afresh (the "
                        "config's model.init_from)")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="log every metric live to TensorBoard event files in DIR/<name>-<run "
                        "id> (the config's train.tensorboard; needs the tensorboard package)")
    add_plugin_option(p, "; added to the config's plugins, so the stored run names them")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (on a terminal) and no line per epoch (into a log "
                        "file or a pipe)")
    p.add_argument("--print-config", action="store_true",
                   help="print the validated config, with the defaults of its sections and "
                        "of its measure items' instruments, and those of the optimizer's and "
                        "model's own arguments as comments marked '# default'; exit without "
                        "training (the data and model are built on the CPU, so bad option "
                        "values and missing data files are reported)")
    p.set_defaults(func=_train)


# keys of the optimizer's open section (its callable's arguments) a newcomer gives as options
_OPTIMIZER_KEYS = ("lr", "momentum", "weight_decay")
# options other tools take for a value of the run config: --optimizer adam names the section's
# callable (it was "did you mean --help?" for --model and --schedule)
_OTHER_NAMES = {"dataset": ["data.name"], "steps": ["train.max_steps"], "loss": ["loss"]}


def config_key_hint(flag: str, value: str | None, option_hint: str = "") -> str | None:
    """``... --set train.epochs=2 ...`` for ``--epochs 2``, an option that is a key of the run
    config's sections (``--optimizer adam``: its ``name``), or misspells one where it
    misspells no option (``option_hint``, the closest option's: ``--no-progres`` is
    ``--no-progress``); None for any other."""
    import difflib

    from sgdlab.config.run import RunConfig
    from sgdlab.config.schema import Section

    keys = {k: [f"optimizer.{k}"] for k in _OPTIMIZER_KEYS}
    for name, field in RunConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, Section):
            for k in section.model_fields:
                if k != "name":
                    keys.setdefault(k, []).append(f"{name}.{k}")
            if "name" in section.model_fields:
                keys.setdefault(name, []).append(f"{name}.name")
    for k, paths in _OTHER_NAMES.items():
        keys.setdefault(k, paths)
    key = flag.lstrip("-").replace("-", "_")
    close = [key] if key in keys else difflib.get_close_matches(key, list(keys), n=1,
                                                                cutoff=0.8)   # --devce
    if not close or (option_hint and close[0] != key):
        return None
    given = value if value is not None else "VALUE"
    return ("a value of the run config is set with --set KEY=VALUE: "
            + " or ".join(f"--set {path}={given}" for path in keys[close[0]])
            + "; --print-config shows them")


def _packaged_names() -> list[str]:
    """The packaged configs' names, as :func:`sgdlab.config.packaged_configs` lists them, read
    from the folder here: `sgdlab.config` imports pydantic and yaml, which the parser every
    command builds does without."""
    from importlib import resources

    root = resources.files("sgdlab") / "configs"
    return sorted(f.name.rsplit(".", 1)[0] for f in root.iterdir()
                  if f.name.endswith((".yaml", ".yml", ".toml")))


def _refuse_an_experiment(config: str) -> None:
    """A catalogue entry's name given to ``sgdlab train`` (not a file, not a packaged config):
    the command that runs it, rather than "no config file"."""
    from sgdlab.config import packaged_configs
    from sgdlab.errors import UserError
    from sgdlab.experiments.spec import catalogue_files

    if not Path(config).exists() and config not in packaged_configs() \
            and config in catalogue_files():
        raise UserError(f"{config!r} is an experiment of the catalogue, not a run config: run "
                        f"it with `sgdlab run {config} --scale smoke|cpu|paper` (`sgdlab "
                        "train` takes a run config file or one of the packaged configs: "
                        f"{', '.join(packaged_configs())})")


def _train(args: argparse.Namespace) -> int:
    from sgdlab.config import apply_overrides, load_config, validate_config
    from sgdlab.config.runner import run_config
    from sgdlab.errors import ConfigError
    from sgdlab.store import default_store_path

    _refuse_an_experiment(args.config)
    loaded = load_config(args.config)
    raw = apply_overrides(loaded, args.overrides)
    if args.tensorboard:
        raw.setdefault("train", {})["tensorboard"] = args.tensorboard
    if args.plugins:
        plugins = raw.setdefault("plugins", [])
        if isinstance(plugins, list):   # (not a list: validate_config names the problem)
            plugins.extend(p for p in args.plugins if p not in plugins)
    if args.init_from is not None:
        model = raw.setdefault("model", {})
        if isinstance(model, dict):   # (not a mapping: validate_config names the problem)
            if model.get("init_from") != args.init_from:
                model.pop("warm_start", None)    # the record of another source
            model["init_from"] = args.init_from
    try:
        cfg = validate_config(raw)
    except ConfigError as e:
        hint = _kept_keys_hint(loaded, args.overrides, str(e))
        if hint is None:
            raise
        raise ConfigError(f"{e}\n{hint}") from None
    if args.print_config:
        from sgdlab.config import build_from_config

        # build the run as training would, so a bad option value (a negative width, a subset
        # larger than the data) or a missing data file is reported here too; on the CPU, as
        # the device may belong to the machine the run is meant for
        build_from_config({**cfg, "train": {**cfg["train"], "device": "cpu"}}, validated=True,
                          store=args.store)
        from sgdlab.config.io import dump_yaml_with_defaults
        from sgdlab.config.run import argument_defaults, with_instrument_defaults

        # the optimizer's and model's own defaults as comments: the printed config stays the
        # one that is run and stored (a run of it compares equal to this one)
        print(dump_yaml_with_defaults(with_instrument_defaults(cfg), argument_defaults(cfg)),
              end="")
        return 0
    # the store is opened (or made) by run_config once the run is built: a config that fails
    # there (a missing data file, no CUDA) leaves no empty store behind
    store = Path(args.store or cfg["store"]["path"] or default_store_path())
    twin = _stopped_twin(cfg, store)

    def started(run_id: str) -> None:
        print(f"sgdlab: training {cfg['name'] or args.config} (store {store})", flush=True)
        if twin is not None:
            print(twin, flush=True)
        announce(run_id, store)

    outcome = run_config(cfg, out_dir=args.out, store=store,
                         progress=False if args.no_progress else None, announce=started)
    return print_outcome(outcome)


def _stopped_twin(cfg: dict, store_path: Path) -> str | None:
    """A note when the latest run of this very config in ``store_path`` stopped before its end
    (interrupted, stale) with a checkpoint: the same command given again after a Ctrl-C
    starts a new run from step 0, where ``sgdlab resume`` would continue that one. None
    otherwise, or when the store cannot say."""
    if not store_path.is_file():
        return None
    try:
        return _twin_note(cfg, store_path)
    except Exception:  # noqa: BLE001 - only a note: a damaged row or checkpoint never stops a run
        return None


def _twin_note(cfg: dict, store_path: Path) -> str | None:
    from sgdlab.cli.runs import checkpoint_step
    from sgdlab.config.runner import resume_command
    from sgdlab.store import RunStore

    # a second's wait at most for a locked store: the note is not worth delaying the run
    with RunStore(store_path, readonly=True, timeout=1.0) as store:
        ids = store.runs_with_config(cfg)
        if not ids:
            return None
        run = store.get_run(ids[-1])     # with its artifacts: its folder
    if run["status"] not in ("interrupted", "stale"):
        return None
    step = checkpoint_step(run, store_path)
    if step in (None, -1):      # no checkpoint: its resume too would start from step 0
        return None
    return (f"sgdlab: note: run {run['id']} of this store has this config and is "
            f"{run['status']} (its last checkpoint is at step {step}); this is a new run "
            "from step 0: to continue that one instead, stop this and run: "
            f"{resume_command(run['id'], store_path)}")


def _kept_keys_hint(loaded: dict, overrides: list[str], message: str) -> str | None:
    """What ``--set optimizer.name=adam`` (or another section's name) kept from the config:
    the other keys of the section, written for the old name (sgd's momentum), which the new
    one may refuse."""
    lines = []
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, last = key.strip().partition(".")
        old = loaded.get(section) if isinstance(loaded, dict) else None
        if last != "name" or not isinstance(old, dict) or f"{section}." not in message:
            continue
        kept = [k for k in old if k != "name"]
        if kept:
            lines.append(f"  (--set {section}.name={value.strip()} keeps the config's other "
                         f"{section} keys, {', '.join(kept)}; --set '{section}={{name: "
                         f"{value.strip()}}}' replaces the whole section)")
    return "\n".join(lines) or None


def announce(run_id: str, store_path) -> None:
    """The run id and the command that continues the run, printed before training starts
    (a SIGKILL leaves no chance to print them later)."""
    from sgdlab.config.runner import resume_command

    print(f"sgdlab: run {run_id} (if it is stopped, continue it with: "
          f"{resume_command(run_id, store_path)})", flush=True)


def print_outcome(outcome) -> int:
    """Print how the run ended, its numbers and where they are; return the command's exit
    status (:data:`EXIT_DIVERGED` for a diverged run, else 0). An interrupt meanwhile (the
    run already complete in the store) says so and where its results are, not a bare
    "interrupted"."""
    try:
        return _print_outcome(outcome)
    except KeyboardInterrupt as e:
        from sgdlab.store.folders import store_option
        from sgdlab.errors import RunInterrupted

        how = "terminated" if str(e) else "interrupted"
        raise RunInterrupted(
            f"{how} while its outcome was printed: run {outcome.run_id} had ended "
            f"({outcome.result.status}) and is stored, its results in "
            f"{Path(outcome.results_path).resolve()}; nothing is left to resume; show it with: "
            f"sgdlab runs show {outcome.run_id} {store_option(outcome.store_path)}") from None


# how many times its step-0 value a finished run's training loss must end at to be told apart
# from a run that trained: a loss that explodes and stays finite is no divergence to the loop
LOSS_ROSE_FACTOR = 10.0


def _loss_rose(points: list[tuple[int, float]]) -> str | None:
    """A note when the training loss ended ``LOSS_ROSE_FACTOR`` times above its value at step
    0: the steps diverged while the loss stayed finite (a ReLU network at a huge learning
    rate), which the status, ``finished``, does not say."""
    if len(points) < 2 or points[0][0] != 0:
        return None
    first, last = points[0][1], points[-1][1]
    if not (math.isfinite(first) and first > 0 and last > LOSS_ROSE_FACTOR * first):
        return None
    return (f"train_loss rose from {first:.4g} at step 0 to {last:.4g}: the steps diverged "
            "though the loss stayed finite (only a non-finite loss stops a run as diverged); "
            "a smaller learning rate?")


def _print_outcome(outcome) -> int:
    from sgdlab.store.folders import store_option
    from sgdlab.train.loop import EVAL_METRICS

    r = outcome.result
    fin = r.final
    metrics = "  ".join(f"{k} {fin[k]:.4g}" for k in EVAL_METRICS if k in fin)
    n = r.epochs_completed
    head = (f"run {outcome.run_id}: {r.status} after {r.steps} step{'s' * (r.steps != 1)} "
            f"({n} epoch{'s' * (n != 1)}")
    head += f", {r.wall_time:.1f} s)"
    if outcome.resumed_from_step is not None:
        head += f", resumed from step {outcome.resumed_from_step}"
    print(head)
    if r.message:
        print(f"  {r.message}")
    if metrics and r.status == "diverged":
        # the values are those of the last evaluation with finite numbers, maybe long before
        steps = [s for s, v in r.history.get("train_loss", []) if math.isfinite(v)]
        print(f"  last finite evaluation (step {steps[-1] if steps else '?'}): {metrics}")
    elif metrics:
        print(f"  final: {metrics}")
        rose = _loss_rose(r.history.get("train_loss", []))
        if rose is not None:
            print(f"  note: {rose}")
    print(f"  results: {_rel(outcome.results_path)}")
    if outcome.figure_path is not None:
        print(f"  plot:    {_rel(outcome.figure_path)}")
    if outcome.instruments_path is not None:
        print(f"  instruments: {_rel(outcome.instruments_path)}")
    if r.checkpoint is not None:
        print(f"  checkpoint: {_rel(r.checkpoint)}")
    if outcome.tensorboard_path is not None:   # the folder's name has the run id in it
        print(f"  tensorboard: {_rel(outcome.tensorboard_path)}  (tensorboard --logdir "
              f"{_rel(outcome.tensorboard_path.parent)})")
    print(f"  store:   {_rel(outcome.store_path)}  (sgdlab runs show {outcome.run_id} "
          f"{store_option(outcome.store_path)})")
    return EXIT_DIVERGED if r.status == "diverged" else 0


def _rel(p) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)
