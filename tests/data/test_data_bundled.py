"""The bundled digits read from scikit-learn's shipped CSV without importing scikit-learn:
the arrays of ``load_digits`` bit for bit, and ``load_digits`` itself when the file moved."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np

from sgdlab.data import bundled

ROOT = Path(__file__).resolve().parents[2]


def test_the_csv_arrays_are_load_digits_bit_for_bit():
    from sklearn.datasets import load_digits

    assert bundled._digits_file() is not None    # else the test checks only the fallback
    x, y = bundled._digits_arrays()
    ref_x, ref_y = load_digits(return_X_y=True)
    assert x.dtype == ref_x.dtype and y.dtype == ref_y.dtype
    assert x.shape == ref_x.shape == (1797, 64) and y.shape == ref_y.shape
    assert x.tobytes() == ref_x.tobytes() and y.tobytes() == ref_y.tobytes()


def test_reading_the_digits_imports_no_sklearn():
    code = ("import sys\n"
            "from sgdlab.data.bundled import _digits_arrays\n"
            "x, y = _digits_arrays()\n"
            "print(x.shape, sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn')[:3])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1797, 64) []"


def test_a_missing_or_unreadable_file_falls_back_to_load_digits(tmp_path, monkeypatch):
    from sklearn.datasets import load_digits

    ref_x, ref_y = load_digits(return_X_y=True)
    monkeypatch.setattr(bundled, "_digits_file", lambda: None)
    x, y = bundled._digits_arrays()
    assert x.tobytes() == ref_x.tobytes() and y.tobytes() == ref_y.tobytes()
    bad = tmp_path / "digits.csv.gz"
    bad.write_bytes(b"not gzip")
    monkeypatch.setattr(bundled, "_digits_file", lambda: bad)
    x, y = bundled._digits_arrays()
    assert x.tobytes() == ref_x.tobytes() and y.tobytes() == ref_y.tobytes()
    # a gzip header, then a deflate block of the reserved type: zlib.error, not an OSError
    bad.write_bytes(gzip.compress(b"0,1\n")[:10] + b"\xff" * 16)
    x, y = bundled._digits_arrays()
    assert x.tobytes() == ref_x.tobytes() and y.tobytes() == ref_y.tobytes()


def test_a_file_of_another_shape_falls_back_to_load_digits(tmp_path, monkeypatch):
    other = tmp_path / "digits.csv.gz"
    with gzip.open(other, "wt") as f:
        np.savetxt(f, np.zeros((3, 65)), delimiter=",")
    monkeypatch.setattr(bundled, "_digits_file", lambda: other)
    x, y = bundled._digits_arrays()
    assert x.shape == (1797, 64) and np.bincount(y).tolist()[:2] == [178, 182]


def test_the_digits_dataset_is_unchanged():
    # the split and scaling on top of the arrays: pinned against load_digits' own arrays
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ds = bundled.load_digits(seed=3, flatten=True)
    raw_x, raw_y = load_digits(return_X_y=True)
    tr, te = train_test_split(np.arange(1797), test_size=360, random_state=3, stratify=raw_y)
    tr, te = np.sort(tr), np.sort(te)
    want = (raw_x[tr] / 16.0).astype(np.float32)
    assert ds.x_train.numpy().tobytes() == want.tobytes()
    assert ds.y_test.numpy().tolist() == raw_y[te].tolist()
