"""What code below the config layer needs of a run's folder and store: the file that says
which run a folder holds (``run.json``), the files ``sgdlab parle --out DIR`` writes in DIR,
``--store PATH`` for a command the user is told to run, and a store made for a run that then
did not start, removed again."""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

# what `sgdlab parle --out DIR` writes in DIR: its results (with its run id; the name
# `sgdlab train` gives its own), the master and its learning curves
REPLICA_RESULT, REPLICA_MASTER = "results.json", "master.pt"
REPLICA_FIGURE, REPLICA_INSTRUMENTS = "learning_curves.png", "instruments.png"
# the results file of a folder written before it was named as sgdlab train names its own
OLD_REPLICA_RESULT = "result.json"
# what makes a folder a run's: {"run_id", "store"}, written before anything else of the run
RUN_FILE = "run.json"
# the `sgdlab parle --out` folder of a distributed run of an experiment's `replicas` procedure,
# in its run key's artifact folder (its checkpoint set in checkpoints/, its master.pt)
SWEEP_REPLICA_FOLDER = "parle"
# where its rank 0 records the run until it ends (the procedure then copies the rows)
SWEEP_REPLICA_STORE = "runs.sqlite"


def is_replica_run(config: Any) -> bool:
    """Whether the run whose record holds ``config`` (its stored config) was trained by
    :mod:`sgdlab.train.replicas`: a run of ``sgdlab parle`` (``method: parle``, its data, model
    and Parle config at the top) or of an experiment's ``replicas`` procedure (the sweep's
    record: ``procedure: replicas``, the same settings under ``params``, and a ``run_key``).
    Such a run logs each round's lr at its end, keeps a master x̄ and a checkpoint set, not
    the training loop's checkpoint."""
    return isinstance(config, dict) and (config.get("method") == "parle"
                                         or config.get("procedure") == "replicas")


def sweep_run_folder(store_path: str | os.PathLike, run_key: str) -> Path:
    """The artifact folder of the run with run key ``run_key`` in the sweep whose store is at
    ``store_path``: ``artifacts/<run key>`` beside the store, absolute (as the sweep makes it,
    :func:`sgdlab.experiments.sweep.artifacts_root`)."""
    return sweep_artifacts(store_path) / run_key


def sweep_artifacts(store_path: str | os.PathLike) -> Path:
    """``artifacts/`` beside the sweep store at ``store_path``, absolute: the paths recorded
    under it are read by reports started from any folder."""
    return Path(os.path.abspath(store_path)).parent / "artifacts"


def sweep_replica_checkpoints(store_path: str | os.PathLike, run_key: str) -> Path:
    """The checkpoint set of the distributed run of the ``replicas`` procedure with run key
    ``run_key`` in the sweep whose store is at ``store_path`` (its ``master.pt`` the master of
    the last round saved)."""
    return sweep_run_folder(store_path, run_key) / SWEEP_REPLICA_FOLDER / "checkpoints"


def replica_result(folder: str | os.PathLike) -> Path | None:
    """The results file of a ``sgdlab parle --out`` folder: ``results.json``, or in a folder
    written before the name was ``sgdlab train``'s, ``result.json``; None when it has none."""
    for name in (REPLICA_RESULT, OLD_REPLICA_RESULT):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def recorded_run(folder: Path) -> tuple[str | None, str | None]:
    """(run id, store path) a run folder records (``run.json``, or ``results.json``; of an
    older ``sgdlab parle --out``: ``result.json``)."""
    for name in (RUN_FILE, "results.json", OLD_REPLICA_RESULT):
        f = Path(folder) / name
        if f.is_file():
            try:
                rec = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if rec.get("run_id"):
                return rec.get("run_id"), rec.get("store")
    return None, None


def store_option(store_path: str | os.PathLike) -> str:
    """``--store PATH`` for a printed command, the path absolute and quoted for the shell: the
    command works from any folder, not only from the one a relative ``--store`` was given in."""
    return f"--store {shlex.quote(os.path.abspath(store_path))}"


def experiment_report_note(folder: Path, *, compare: bool = False) -> str | None:
    """What to do instead with ``folder``, given where one run is asked for (resume, compare,
    measure), when it holds an experiment's report (its results.json names an experiment and
    its runs, not one run); None when it does not. ``compare``: the command compares runs, and
    two reports compare too."""
    try:
        res = json.loads((folder / "results.json").read_text())
        name, runs = res["experiment"]["name"], res["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    from sgdlab.experiments.spec import SCALES

    store = f" {store_option(res['store'])}" if res.get("store") else ""
    # the store holds the experiment's runs at every scale: the report's are of its own
    if res.get("scale") in SCALES:
        store = f" --scale {res['scale']}{store}"
    # runs export writes nowhere without a PATH; the compare advice answers only a compare
    reports = (f"; two reports compare with `sgdlab report {folder} --compare OTHER`"
               if compare else "")
    return (f"{folder} holds the report of experiment {name} (scale {res.get('scale')}, "
            f"{len(runs)} runs), not one run: `sgdlab runs list --experiment {name}{store}` "
            f"lists its runs, whose ids each stand for one run here (`sgdlab runs export "
            f"runs.csv --experiment {name}{store}` writes their metrics){reports}")


def open_new_store(path: str | os.PathLike):
    """Open (or make) the run store at ``path`` for a run about to start: returns the
    :class:`~sgdlab.store.RunStore` and whether this call made it (its file and, where it
    made it too, its folder), to hand to :func:`drop_if_unused` should the run not start."""
    from pathlib import Path

    from .runstore import RunStore

    p = Path(path)
    made = [q for q in (p.parent, p) if not q.exists()]
    return RunStore(p), made


def drop_if_unused(made: list) -> None:
    """Remove what :func:`open_new_store` made (the store file with its ``-wal``/``-shm``,
    then its folder if empty) when the store still holds no run: a run that never started
    leaves no empty store behind, as ``sgdlab train`` leaves none. Best effort."""
    import sqlite3
    from pathlib import Path

    for p in reversed(made):
        p = Path(p)
        try:
            if p.is_dir():
                p.rmdir()                   # only when empty
                continue
            with sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True) as conn:
                runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            conn.close()
            if runs == 0:
                for f in (p, Path(f"{p}-wal"), Path(f"{p}-shm")):
                    f.unlink(missing_ok=True)
        except (OSError, sqlite3.Error):
            pass
