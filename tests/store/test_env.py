"""What a run ran on (sgdlab.store.env): the git commit of a checkout written here by hand,
clean, with a tracked file changed, with only an untracked file, and outside any checkout."""
import subprocess

import pytest

from sgdlab.store.env import environment, git_commit


def _git(where, *args):
    return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return repo


def test_git_commit_is_head_and_dirty_only_for_a_changed_tracked_file(checkout):
    head = _git(checkout, "rev-parse", "HEAD")
    assert git_commit(checkout) == head
    (checkout / "notes.txt").write_text("untracked\n")        # not part of the run's code
    assert git_commit(checkout) == head
    (checkout / "a.txt").write_text("two\n")
    assert git_commit(checkout) == head + "+dirty"


def test_git_commit_outside_a_checkout_is_none(tmp_path):
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_commit(outside) is None


def test_environment_records_the_seed_and_device_given():
    env = environment(seed=7, device="cpu")
    assert env["seed"] == 7 and env["device"] == "cpu"
