"""Weight-trajectory files: snapshots of (a fixed subset of) the flat parameters, appended.

A trajectory is a directory::

    meta.json        {"format": "sgdlab-trajectory", "version": 1, "dtype": "float32",
                      "num_params": d, "num_coords": k, "subset_seed": 0 | null, ...}
    coords.npy       int64 (k,) indices into the flat parameter vector (sorted; only when a subset)
    snapshots.bin    raw little-endian rows of k values in ``dtype``, one row per snapshot
    index.bin        raw little-endian int64 pairs (step, epoch), one per row

Rows are only ever appended, so a killed writer leaves at most one partial row, which is
dropped on reopening (row count = the smaller of the two files' whole-row counts). Reading is a
read-only ``numpy.memmap`` of shape (T, k): nothing is loaded until sliced. ``float16`` halves
the size (≈3 significant digits: enough for spectra of increments only if the steps are not
below the float16 resolution of the weights — prefer float32 for small learning rates).

Flat-vector order is ``sgdlab.operators.params`` (trainable parameters in
``model.named_parameters()`` order).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from sgdlab.errors import DataError, UserError, int_at_least, is_seed, not_a_seed, plain_int
from sgdlab.strict_json import write_atomic

__all__ = ["TrajectoryReader", "TrajectoryWriter", "choose_coordinates", "open_trajectory"]

FORMAT = "sgdlab-trajectory"
VERSION = 1
_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "float64": np.dtype("<f8")}
_INDEX = np.dtype("<i8")


def choose_coordinates(num_params: int, num_coords: int | None, seed: int = 0) -> np.ndarray | None:
    """A fixed random subset of ``num_coords`` sorted indices in [0, num_params) (None: all);
    numpy's and torch's ints are ints (:func:`~sgdlab.errors.plain_int`)."""
    num_coords, seed = plain_int(num_coords), plain_int(seed)
    # True was 1 coordinate, a negative seed numpy's "expected non-negative integer"
    if num_coords is not None and not int_at_least(num_coords, 1):
        raise UserError(f"num_coords must be >= 1 (an int, or None: all), got {num_coords!r}")
    if not is_seed(seed):
        raise UserError(not_a_seed("seed", seed))
    if num_coords is None or num_coords >= num_params:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_params, size=num_coords, replace=False)).astype(np.int64)


def _whole_rows(path: Path, row_bytes: int) -> int:
    return path.stat().st_size // row_bytes if path.exists() else 0


class TrajectoryReader:
    """Read a trajectory directory. ``snapshots`` is a read-only memmap (T, k)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.exists():
            raise DataError(f"{self.path} is not a trajectory (no meta.json)")
        self.meta = json.loads(meta_file.read_text())
        if self.meta.get("format") != FORMAT:
            raise DataError(f"{meta_file}: not an {FORMAT} file")
        if self.meta.get("version") != VERSION:
            raise DataError(f"{meta_file}: unsupported version {self.meta.get('version')}")
        self.dtype = _DTYPES[self.meta["dtype"]]
        self.num_params = int(self.meta["num_params"])
        self.num_coords = int(self.meta["num_coords"])
        coords_file = self.path / "coords.npy"
        self.coords = (np.load(coords_file, allow_pickle=False) if coords_file.exists()
                       else np.arange(self.num_params, dtype=np.int64))
        if len(self.coords) != self.num_coords:
            raise DataError(f"{coords_file}: {len(self.coords)} indices, meta says "
                            f"{self.num_coords}")
        self._rows = min(_whole_rows(self.path / "snapshots.bin",
                                     self.num_coords * self.dtype.itemsize),
                         _whole_rows(self.path / "index.bin", 2 * _INDEX.itemsize))

    def __len__(self) -> int:
        return self._rows

    @property
    def snapshots(self) -> np.ndarray:
        """(T, k) memmap in the stored dtype (read-only)."""
        if self._rows == 0:
            return np.zeros((0, self.num_coords), dtype=self.dtype)
        return np.memmap(self.path / "snapshots.bin", dtype=self.dtype, mode="r",
                         shape=(self._rows, self.num_coords))

    def _index(self) -> np.ndarray:
        if self._rows == 0:
            return np.zeros((0, 2), dtype=_INDEX)
        return np.fromfile(self.path / "index.bin", dtype=_INDEX,
                           count=2 * self._rows).reshape(self._rows, 2)

    @property
    def steps(self) -> np.ndarray:
        """Optimizer steps taken when each snapshot was written (int64, (T,))."""
        return self._index()[:, 0].copy()

    @property
    def epochs(self) -> np.ndarray:
        """Completed epochs when each snapshot was written (int64, (T,))."""
        return self._index()[:, 1].copy()

    def select(self, coords: np.ndarray | list[int]) -> np.ndarray:
        """Snapshots (T, len(coords)) of flat-parameter indices ``coords`` (must be recorded)."""
        want = np.asarray(coords, dtype=np.int64)
        pos = np.searchsorted(self.coords, want)
        ok = (pos < len(self.coords)) & (self.coords[np.minimum(pos, len(self.coords) - 1)]
                                         == want)
        if not ok.all():
            raise UserError(f"coordinates {want[~ok][:5].tolist()} were not recorded")
        return np.asarray(self.snapshots[:, pos])


def open_trajectory(path: str | os.PathLike) -> TrajectoryReader:
    return TrajectoryReader(path)


class TrajectoryWriter:
    """Append snapshots of a flat parameter vector to a trajectory directory.

    Opening an existing directory resumes it (the metadata must agree); ``truncate(rows)``
    rolls it back, e.g. to the row count saved with a checkpoint, so a resumed run does not
    duplicate snapshots written after that checkpoint.
    """

    def __init__(self, path: str | os.PathLike, num_params: int, *,
                 num_coords: int | None = None, seed: int = 0, dtype: str = "float32",
                 extra_meta: dict | None = None):
        if dtype not in _DTYPES:
            raise UserError(f"unsupported trajectory dtype {dtype!r}; use one of "
                            f"{sorted(_DTYPES)}")
        if num_params < 1:
            raise UserError(f"num_params must be >= 1, got {num_params}")
        # checked before the folder is made; the seed is written to meta.json as a plain int
        num_coords, seed = plain_int(num_coords), plain_int(seed)
        coords = choose_coordinates(num_params, num_coords, seed)
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "version": VERSION, "dtype": dtype, "num_params": num_params,
                "num_coords": num_params if coords is None else len(coords),
                "subset_seed": None if coords is None else seed, "extra": extra_meta or {}}
        meta_file = self.path / "meta.json"
        if meta_file.exists():
            old = json.loads(meta_file.read_text())
            for key in ("format", "version", "dtype", "num_params", "num_coords", "subset_seed"):
                if old.get(key) != meta[key]:
                    raise UserError(f"{self.path}: existing trajectory has {key}={old.get(key)!r}"
                                    f", this writer wants {meta[key]!r}")
        else:
            if coords is not None:
                np.save(self.path / "coords.npy", coords, allow_pickle=False)
            write_atomic(meta_file, meta, indent=1)
        self.meta = meta
        self.coords = coords
        self.dtype = _DTYPES[dtype]
        self.num_coords = meta["num_coords"]
        self._row_bytes = self.num_coords * self.dtype.itemsize
        self.rows = min(_whole_rows(self.path / "snapshots.bin", self._row_bytes),
                        _whole_rows(self.path / "index.bin", 2 * _INDEX.itemsize))
        self.truncate(self.rows)  # drop a partial row left by a killed writer

    def truncate(self, rows: int) -> None:
        """Keep the first ``rows`` snapshots."""
        if rows < 0 or rows > self.rows:
            raise UserError(f"cannot truncate {self.path} to {rows} rows (it has {self.rows})")
        for name, nbytes in (("snapshots.bin", rows * self._row_bytes),
                             ("index.bin", rows * 2 * _INDEX.itemsize)):
            with open(self.path / name, "ab") as f:
                f.truncate(nbytes)
        self.rows = rows

    def append(self, flat, step: int, epoch: int = 0) -> None:
        """Write one snapshot (a flat numpy array or tensor of all ``num_params`` values)."""
        if hasattr(flat, "detach"):
            flat = flat.detach().to("cpu").double().numpy()
        v = np.asarray(flat).reshape(-1)
        if v.size != self.meta["num_params"]:
            raise UserError(f"snapshot has {v.size} values, trajectory expects "
                            f"{self.meta['num_params']}")
        row = (v if self.coords is None else v[self.coords]).astype(self.dtype)
        with open(self.path / "snapshots.bin", "ab") as f:
            f.write(row.tobytes())
        with open(self.path / "index.bin", "ab") as f:
            f.write(np.asarray([step, epoch], dtype=_INDEX).tobytes())
        self.rows += 1

    def reader(self) -> TrajectoryReader:
        return TrajectoryReader(self.path)
