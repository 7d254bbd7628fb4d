"""The run store: every run's config, environment, status and metric time series in SQLite.

``RunStore(path=None)`` (default ``./sgdlab-runs/runs.sqlite`` or ``$SGDLAB_STORE``); see
:mod:`sgdlab.store.runstore` for the guarantees under concurrent writers and killed processes,
and :mod:`sgdlab.store.deletion` for deleting runs with the folders the store keeps for them.
"""
from .env import environment, git_commit
from .runstore import (
    SHOWN_STATUSES,
    STATUSES,
    MetricWriter,
    RunStore,
    default_store_path,
    first_run_hint,
    folder_hint,
    new_run_id,
    owner_alive,
    read_export,
    shown_status,
)

__all__ = ["SHOWN_STATUSES", "STATUSES", "MetricWriter", "RunStore", "default_store_path",
           "environment", "first_run_hint", "folder_hint", "git_commit", "new_run_id",
           "owner_alive", "read_export", "shown_status"]
