"""Weight-trajectory files (``sgdlab.store.trajectory``): row counts after a killed writer,
truncation bounds and the coordinate subset, checked on tiny trajectories by hand."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from sgdlab.errors import UserError
from sgdlab.store.trajectory import TrajectoryWriter, choose_coordinates, open_trajectory


def test_a_reader_counts_the_rows_both_files_hold_whole(tmp_path):
    # killed between the two writes of a row: its snapshot is there, its index entry is not
    w = TrajectoryWriter(tmp_path / "tr", 3, dtype="float64")
    w.append(np.array([1.0, 2.0, 3.0]), step=1, epoch=0)
    w.append(np.array([4.0, 5.0, 6.0]), step=2, epoch=1)
    with open(tmp_path / "tr" / "snapshots.bin", "ab") as f:
        f.write(np.array([7.0, 8.0, 9.0], dtype="<f8").tobytes())
    rd = open_trajectory(tmp_path / "tr")
    assert len(rd) == 2 and list(rd.steps) == [1, 2] and list(rd.epochs) == [0, 1]
    np.testing.assert_array_equal(rd.snapshots, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


def test_truncate_keeps_the_first_rows_and_refuses_more_than_there_are(tmp_path):
    w = TrajectoryWriter(tmp_path / "tr", 2, dtype="float64")
    for i in range(3):
        w.append(np.array([i, -i], dtype=float), step=10 * i)
    with pytest.raises(UserError, match="cannot truncate .* to 4 rows \\(it has 3\\)"):
        w.truncate(4)
    with pytest.raises(UserError, match="to -1 rows"):
        w.truncate(-1)
    assert w.rows == 3 and len(w.reader()) == 3
    w.truncate(1)
    rd = w.reader()
    assert len(rd) == 1 and list(rd.steps) == [0]
    assert (tmp_path / "tr" / "snapshots.bin").stat().st_size == 2 * 8
    assert (tmp_path / "tr" / "index.bin").stat().st_size == 2 * 8


def test_as_many_coordinates_as_parameters_is_no_subset():
    assert choose_coordinates(5, 5) is None and choose_coordinates(5, 9) is None
    assert choose_coordinates(5, None) is None
    sub = choose_coordinates(5, 4, seed=1)
    assert len(sub) == 4 and list(sub) == sorted(set(sub)) and sub.max() < 5
    with pytest.raises(UserError, match="num_coords must be >= 1"):
        choose_coordinates(5, 0)


def test_numpy_and_torch_ints_are_a_subset_size_and_seed(tmp_path):
    """np.int64(3) and np.int64(1) draw the subset 3 and 1 do, and the seed is stored as the
    int 1 (np.int64 failed the write of meta.json: "not JSON serializable")."""
    sub = choose_coordinates(10, 3, seed=1)
    np.testing.assert_array_equal(choose_coordinates(10, np.int64(3), seed=np.int64(1)), sub)
    w = TrajectoryWriter(tmp_path / "tr", 10, num_coords=torch.tensor(3), seed=np.uint8(1))
    np.testing.assert_array_equal(w.coords, sub)
    assert open_trajectory(tmp_path / "tr").meta["subset_seed"] == 1


@pytest.mark.parametrize("options, says", [
    ({"num_coords": True}, "num_coords must be >= 1 (an int, or None: all), got True"),
    ({"num_coords": 2.0}, "num_coords must be >= 1 (an int, or None: all), got 2.0"),
    ({"num_coords": 3, "seed": -1}, "seed must be an int in 0..2**32 - 1 (as a run config's "
                                    "seed), got -1"),
    ({"num_coords": 3, "seed": True}, "seed must be an int in 0..2**32 - 1"),
    ({"num_coords": 3, "seed": 2**32}, "seed must be an int in 0..2**32 - 1")])
def test_a_bool_or_a_seed_out_of_range_is_refused_before_the_folder_is_made(tmp_path, options,
                                                                            says):
    with pytest.raises(UserError, match=re.escape(says)):
        TrajectoryWriter(tmp_path / "tr", 10, **options)
    assert not (tmp_path / "tr").exists()
