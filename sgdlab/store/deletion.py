"""Deleting runs: their rows in the run store and the files the store keeps for them.

The store's own folders are the two it names for a run, beside the store's file:
``<store folder>/<run id>/``, the folder ``sgdlab train`` makes for a run given no ``--out``
(its config, results, figures, checkpoints, ``sgdlab measure``'s default output), and
``<store folder>/artifacts/<run key>/``, the artifact folder of a run of an experiment's sweep
(its checkpoint, ``weights.pt``, data files). Only those are removed. A file a run recorded
anywhere else (a ``--out`` folder, a ``sgdlab parle`` folder, a measurement written elsewhere,
a relative path of an old store) stays where it is, and the plan names it. A sweep's artifact
folder belongs to its run key, which every attempt of the key shares: it goes only with the
last run of the store that has the key, and never while a live sweep leases the key.

**Rows first, files after.** :meth:`RunStore.delete_runs` deletes the runs' rows in one
transaction (refusing, inside it, a run that a live process holds); the folders are removed
once it has committed. A delete interrupted between the two leaves folders that no row names
(orphans: the space is not freed, nothing is wrong), never a row naming files that are gone;
the reverse order could leave a finished run whose weights or checkpoint had vanished, which
its readers (``sgdlab measure``, warm starts, ``sgdlab resume``) would then refuse.
:func:`find_orphans` finds such folders again (``sgdlab runs delete --orphans``): a run folder
whose ``run.json`` names a run id of this store that no row has, an artifact folder whose run
key no run has and no live sweep leases; :func:`delete_orphans` removes them, checking each
once more just before.

Nothing here imports torch.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .folders import recorded_run, store_option
from .runstore import is_sqlite_file

# the sweep's artifact folders beside the store (sgdlab/experiments/sweep.py::artifacts_root)
ARTIFACTS = "artifacts"


@dataclass
class RunRemoval:
    """One run to delete: ``run`` (as :meth:`RunStore.get_run` gives it), the store's
    ``folders`` that go with it and their ``size`` (bytes, each file once), its artifact
    folder ``shared`` with the remaining runs of its key (kept: ``(folder, its users)``, each
    ``run ID`` or the live sweep that leases the key), the recorded paths ``outside`` the
    store's folders (kept) and why it is ``live`` (None: no live process holds it)."""

    run: dict[str, Any]
    folders: list[Path] = field(default_factory=list)
    size: int = 0
    shared: list[tuple[Path, list[str]]] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    live: str | None = None


@dataclass
class DeletionPlan:
    """What deleting runs removes (:func:`plan_deletion`). ``dependants``: the remaining runs
    warm-started from a deleted run or from a checkpoint in a removed folder, each with what
    it started from; ``rerun``: the deleted finished or diverged sweep runs whose key no
    remaining run completes (their sweep runs them again)."""

    store: Path
    runs: list[RunRemoval]
    dependants: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r.run["id"] for r in self.runs]

    @property
    def size(self) -> int:
        return sum(r.size for r in self.runs)

    @property
    def live(self) -> dict[str, str]:
        return {r.run["id"]: r.live for r in self.runs if r.live is not None}


@dataclass
class DeletionResult:
    """What :func:`delete_planned` did: the ``rows`` deleted per table, the folders
    ``removed`` and the bytes ``freed``, the folders ``kept`` (in use since the plan) and
    those that ``failed`` (``(folder, why)``: their rows are gone; remove them by hand)."""

    rows: dict[str, int]
    removed: list[Path] = field(default_factory=list)
    freed: int = 0
    kept: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def remove(self, folder: Path, size: int) -> None:
        """Remove ``folder`` (``size`` bytes), recording it as removed or failed."""
        try:
            shutil.rmtree(folder)
        except FileNotFoundError:
            return              # gone already: nothing to free
        except OSError as e:
            self.failed.append((folder, e.strerror or str(e)))
            return
        self.removed.append(folder)
        self.freed += size


def _plain_name(name: Any) -> bool:
    """Whether ``name`` can only name an entry of one folder (no separator, no ``..``)."""
    return (isinstance(name, str) and name not in ("", ".", "..", ARTIFACTS)
            and os.sep not in name and not (os.altsep and os.altsep in name)
            and "\0" not in name)


def _run_key(run: dict[str, Any]) -> str | None:
    cfg = run.get("config")
    key = cfg.get("run_key") if isinstance(cfg, dict) else None
    return key if isinstance(key, str) and key else None


class _Folders:
    """A set of folders that answers whether a path lies in one of them, as written or with
    links resolved (each path resolved once, not once per folder)."""

    def __init__(self, folders: list[Path]):
        self.paths = {Path(os.path.normpath(f)) for f in folders}
        for f in folders:
            try:
                self.paths.add(f.resolve())
            except (OSError, RuntimeError):
                pass

    def __contains__(self, path: Path) -> bool:
        forms = [Path(os.path.normpath(path))]
        try:
            forms.append(path.resolve())
        except (OSError, RuntimeError):
            pass
        return any(p in self.paths or not self.paths.isdisjoint(p.parents) for p in forms)


def _own_folder(path: Path) -> bool:
    """A folder the store may remove: a real folder, not a link to one elsewhere."""
    return path.is_dir() and not path.is_symlink()


def folder_size(folder: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes of the files under ``folder`` (apparent sizes; links not followed; a file
    ``seen`` before, by device and inode, not counted again); 0 for no folder. What cannot
    be read is left out."""
    seen = set() if seen is None else seen
    total = 0
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _recorded_path(path: str, store_dir: Path) -> Path | None:
    """The file a recorded artifact path names: absolute as recorded; a relative one under
    ``artifacts/`` (an old store's) beside this store; None for another relative one (its
    folder is not known)."""
    p = Path(path)
    if p.is_absolute():
        return Path(os.path.normpath(p))
    if ARTIFACTS in p.parts:
        tail = p.parts[len(p.parts) - 1 - p.parts[::-1].index(ARTIFACTS):]
        return store_dir.joinpath(*tail)
    return None


def plan_deletion(store, run_ids: list[str]) -> DeletionPlan:
    """What deleting the runs ``run_ids`` (full ids) of ``store`` removes, reading only."""
    store_dir = Path(os.path.abspath(store.path)).parent
    ids = list(dict.fromkeys(run_ids))
    chosen = set(ids)
    live = store.live_runs(ids)
    remaining = [r for r in store.list_runs() if r["id"] not in chosen]
    by_key: dict[str, list[str]] = {}
    for r in remaining:
        if (key := _run_key(r)) is not None:
            by_key.setdefault(key, []).append(r["id"])
    plan = DeletionPlan(Path(store.path), [])
    seen: set[tuple[int, int]] = set()
    taken: set[Path] = set()        # a key folder several deleted runs share: listed once
    for rid in ids:
        run = store.get_run(rid)
        removal = RunRemoval(run, live=live.get(rid))
        own = store_dir / rid
        if _plain_name(rid) and _own_folder(own):
            removal.folders.append(own)
        key = _run_key(run)
        if key is not None and _plain_name(key):
            folder = store_dir / ARTIFACTS / key
            users = [f"run {u}" for u in by_key.get(key, [])]
            if (holder := store.lease_holder(key)) is not None:
                users.append(f"a live sweep (process {holder['pid']} on {holder['host']})")
            if users and folder.exists():
                removal.shared.append((folder, users))
            elif _own_folder(folder) and folder not in taken:
                removal.folders.append(folder)
                taken.add(folder)
        plan.runs.append(removal)
    removed = _Folders([f for r in plan.runs for f in r.folders])
    covered = _Folders([f for r in plan.runs for f in r.folders]
                       + [f for r in plan.runs for f, _ in r.shared])
    for removal in plan.runs:
        removal.size = sum(folder_size(f, seen) for f in removal.folders)
        outside: list[str] = []
        for a in removal.run["artifacts"]:
            path = _recorded_path(a["path"], store_dir)
            if path is not None and path in covered:
                continue
            outside.append(a["path"])
        # a file in a recorded folder (results.json in an --out folder) is named by the folder
        outside = sorted(set(outside))
        removal.outside = [p for p in outside if not any(
            p != q and Path(p).is_relative_to(q) for q in outside)]
    for r in remaining:
        model = r["config"].get("model") if isinstance(r["config"], dict) else None
        warm = model.get("warm_start") if isinstance(model, dict) else None
        if not isinstance(warm, dict):
            continue
        ckpt = warm.get("checkpoint")
        if warm.get("run_id") in chosen:
            plan.dependants.append((r, f"run {warm['run_id']}"))
        elif isinstance(ckpt, str) and Path(ckpt) in removed:
            plan.dependants.append((r, ckpt))
    done = {_run_key(r) for r in remaining if r["status"] in ("finished", "diverged")}
    plan.rerun = [r.run["id"] for r in plan.runs
                  if r.run.get("experiment") and _run_key(r.run) is not None
                  and r.run["status"] in ("finished", "diverged") and _run_key(r.run) not in done]
    return plan


def delete_planned(store, plan: DeletionPlan, *, force: bool = False) -> DeletionResult:
    """Delete the runs of ``plan``: their rows in one transaction
    (:meth:`RunStore.delete_runs`, which refuses a run a live process holds unless
    ``force``), then their folders. A folder whose run key a run created since the plan has,
    or a live sweep has leased since, is kept; one that cannot be removed is reported, and
    the others are removed all the same."""
    rows = store.delete_runs(plan.ids, force=force)
    in_use = rows.pop("keys_in_use")
    result = DeletionResult(rows)
    seen: set[tuple[int, int]] = set()
    artifacts = Path(os.path.abspath(store.path)).parent / ARTIFACTS
    folders = [f for r in plan.runs for f in r.folders]
    try:
        for folder in folders:
            if folder.parent == artifacts and (folder.name in in_use
                                               or store.lease_holder(folder.name) is not None):
                result.kept.append((folder, f"run key {folder.name} is in use by a run or "
                                            "sweep started since"))
                continue
            result.remove(folder, folder_size(folder, seen))
    except KeyboardInterrupt as e:
        # the rows are gone: no later delete finds these folders, so name them
        how = str(e) or "interrupted"         # SIGTERM's "terminated (SIGTERM)" kept
        kept = {f for f, _ in result.kept}
        left = [str(f) for f in folders if f.exists() and f not in kept]
        one = rows["runs"] == 1
        records = ("the run's record is deleted" if one
                   else f"the {rows['runs']} runs' records are deleted")
        if not left:
            raise KeyboardInterrupt(f"{how}: {records}, and none of "
                                    f"{'its' if one else 'their'} folders remains") from None
        raise KeyboardInterrupt(
            f"{how}: {records}, but {len(left)} of {'its' if one else 'their'} folders "
            f"{'remains' if len(left) == 1 else 'remain'}; `sgdlab runs delete --orphans "
            f"{store_option(store.path)}` removes {'it' if len(left) == 1 else 'them'}: "
            f"{', '.join(left)}") from None
    return result


@dataclass
class Orphans:
    """Folders of the store's own that no run names (:func:`find_orphans`): ``folders``, each
    ``(folder, size in bytes)``, and ``unscanned``: why ``artifacts/`` was not looked in
    (None: it was, or there is none)."""

    folders: list[tuple[Path, int]] = field(default_factory=list)
    unscanned: str | None = None

    @property
    def size(self) -> int:
        return sum(n for _, n in self.folders)


def _other_stores(store_dir: Path, mine: Path) -> list[Path]:
    """The SQLite files in ``store_dir`` other than the store ``mine`` (and its journals):
    stores that would share its ``artifacts/`` folder."""
    journals = {mine.name + suffix for suffix in ("", "-wal", "-shm", "-journal")}
    return sorted(e for e in store_dir.iterdir()
                  if e.name not in journals and e.is_file() and is_sqlite_file(e))


def find_orphans(store) -> Orphans:
    """The store's own folders that no run names, reading only: ``<store folder>/<name>/``
    whose ``run.json`` (or ``results.json``) records run id ``name`` in this store (the
    store's path, resolved) when no run has that id, and ``<store folder>/artifacts/<key>/``
    when no run has run key ``key`` and no live sweep leases it. Folders that are links are
    not followed, and a folder without such a record is no run's (a folder of one's own
    beside the store stays). ``artifacts/`` is not looked in while another store's file lies
    beside this one (the two would share it, and this store cannot tell whose a key is)."""
    mine = Path(os.path.abspath(store.path))
    store_dir, me = mine.parent, mine.resolve()
    out = Orphans()
    if not store_dir.is_dir():
        return out
    seen: set[tuple[int, int]] = set()
    for entry in sorted(store_dir.iterdir()):
        if (not (_plain_name(entry.name) and _own_folder(entry))
                or store.folder_in_use(entry.name)):
            continue
        rid, where = recorded_run(entry)
        if rid == entry.name and isinstance(where, str) and Path(where).resolve() == me:
            out.folders.append((entry, folder_size(entry, seen)))
    artifacts = store_dir / ARTIFACTS
    if not _own_folder(artifacts):
        return out
    others = _other_stores(store_dir, mine)
    if others:
        out.unscanned = (f"{artifacts} is shared with the store {others[0]} beside this one"
                         f"{' (and more)' if len(others) > 1 else ''}: its key folders are "
                         "not looked at")
        return out
    in_use = store.keys_in_use()
    for entry in sorted(artifacts.iterdir()):
        if _plain_name(entry.name) and _own_folder(entry) and entry.name not in in_use:
            out.folders.append((entry, folder_size(entry, seen)))
    return out


def delete_orphans(store, orphans: Orphans) -> DeletionResult:
    """Remove the folders of ``orphans``, each checked again before (a run or a sweep's lease
    that names it since is kept: the runs read once, as :func:`delete_planned` does, a lease
    looked up just before its folder goes); one that cannot be removed is reported, and the
    others are removed all the same. ``rows`` of the result is empty."""
    result = DeletionResult({})
    artifacts = Path(os.path.abspath(store.path)).parent / ARTIFACTS
    keys = store.keys_in_use()      # once: a read per folder scans every run's config
    try:
        for folder, size in orphans.folders:
            key = folder.parent == artifacts
            if key:
                in_use = folder.name in keys or store.lease_holder(folder.name) is not None
            else:
                in_use = store.folder_in_use(folder.name)
            if in_use:
                result.kept.append((folder, f"{'run key' if key else 'run'} {folder.name} is "
                                            "in use by a run or sweep started since"))
                continue
            result.remove(folder, size)
    except KeyboardInterrupt as e:
        left = len([f for f, _ in orphans.folders if f.exists()])
        raise KeyboardInterrupt(
            f"{str(e) or 'interrupted'}: {left} folder{'s' if left != 1 else ''} that no run "
            f"names {'remains' if left == 1 else 'remain'}; `sgdlab runs delete --orphans "
            f"{store_option(store.path)}` removes {'it' if left == 1 else 'them'}") from None
    return result
