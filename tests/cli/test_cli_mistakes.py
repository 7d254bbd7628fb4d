"""A researcher's slips on the command line, each named in one line: a mistyped path or run
id, a section's name under another key, a run started again instead of resumed."""
from __future__ import annotations

from sgdlab.cli.main import main
from sgdlab.store import RunStore


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_measure_of_a_mistyped_folder_says_there_is_no_such_file_or_folder(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    RunStore(store).create_run({"lr": 0.1}, name="r")
    missing = str(tmp_path / "runs" / "t9")
    assert main(["measure", missing, "--store", str(store)]) == 2
    err = one_error_line(capsys)
    assert f"'{missing}' is no file or folder, and no run" in err


def test_a_mistyped_run_id_names_the_closest_id_of_the_store(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    with RunStore(store) as s:
        rid = s.create_run({"lr": 0.1}, name="r")
    typo = rid[:-1] + ("0" if rid[-1] != "0" else "1")
    for argv in (["runs", "show", typo], ["resume", typo], ["runs", "compare", rid, typo]):
        assert main([*argv, "--store", str(store)]) == 2
        assert f"no run '{typo}' in {store} (did you mean {rid}?)" in one_error_line(capsys)
    # an id far from every run's gets no hint rather than another run's
    assert main(["runs", "show", "19990101-000000-zzzz", "--store", str(store)]) == 2
    assert "did you mean" not in one_error_line(capsys)
