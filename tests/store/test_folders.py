"""sgdlab.store.folders: which stored runs were trained by sgdlab.train.replicas."""
from __future__ import annotations

import pytest

from sgdlab.store.folders import is_replica_run


@pytest.mark.parametrize("config, replica", [
    ({"method": "parle", "mode": "distributed", "parle": {"L": 2}}, True),   # sgdlab parle
    ({"procedure": "replicas", "params": {"parle": {"L": 2}}, "run_key": "k"}, True),
    # a run whose settings merely hold a key named parle: trained by a training loop
    ({"procedure": "train", "params": {"parle": {"L": 2}}, "run_key": "k"}, False),
    ({"method": "sgd", "parle": {"L": 2}}, False),
    ({"procedure": "train_or_interpolate", "params": {}}, False),
    (None, False), ("parle", False)])
def test_a_replica_run_is_named_by_its_method_or_procedure_not_a_parle_key(config, replica):
    assert is_replica_run(config) is replica
