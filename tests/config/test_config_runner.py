"""The advice for a failed run of ``sgdlab train`` (:class:`FailedRunAdvice`): whose it is is
decided by the run's record, not by the wording of another command."""
from __future__ import annotations

from sgdlab.config.runner import FailedRunAdvice


def _run(status: str, artifacts: list[dict]) -> dict:
    return {"id": "r1", "status": status, "artifacts": artifacts}


def test_failed_run_advice_is_for_a_failed_run_of_sgdlab_train_only(tmp_path):
    store = tmp_path / "runs.sqlite"
    folder = {"kind": "out_dir", "path": str(tmp_path / "run")}
    parle = {"kind": "checkpoints", "path": str(tmp_path / "parle" / "checkpoints")}
    assert FailedRunAdvice.of(_run("failed", [parle]), store) is None       # `sgdlab parle`
    assert FailedRunAdvice.of(_run("failed", []), store) is None            # a sweep's run
    assert FailedRunAdvice.of(_run("interrupted", [folder]), store) is None
    advice = FailedRunAdvice.of(_run("failed", [parle, folder]), store)
    assert advice == FailedRunAdvice("r1", store, checkpoint=False)
    assert advice.warm_start is None and "--init-from" not in advice.corrected()
    # its last checkpoint there: the warm start is offered
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"")
    advice = FailedRunAdvice.of(_run("failed", [folder]), store)
    assert advice.warm_start == f"sgdlab train CONFIG --init-from r1 --store {store}"
    assert advice.corrected().endswith(f"start it from the failed run's last checkpoint: "
                                       f"{advice.warm_start} (a warm start: the weights only, "
                                       "the optimizer and step count afresh)")
    # one the caller found unreadable is not
    assert FailedRunAdvice.of(_run("failed", [folder]), store, checkpoint=False).warm_start \
        is None
