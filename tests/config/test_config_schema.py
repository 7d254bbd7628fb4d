"""The published JSON Schema of run configs agrees with the validator."""
from __future__ import annotations

import json

import jsonschema
import pytest

from sgdlab.cli.main import main
from sgdlab.config import (apply_overrides, json_schema, load_config, packaged_configs,
                           validate_config)
from sgdlab.errors import ConfigError


@pytest.fixture(scope="module")
def validator():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator, raw) -> list[str]:
    return [".".join(map(str, e.absolute_path)) + ": " + e.message
            for e in validator.iter_errors(raw)]


@pytest.mark.parametrize("name", sorted(packaged_configs()))
def test_every_packaged_config_matches_the_schema(validator, name):
    raw = load_config(name)
    assert schema_errors(validator, raw) == []
    assert schema_errors(validator, validate_config(raw)) == []  # with every default filled


README_STYLE = {
    "name": "my-run",
    "data": {"name": "digits", "seed": 0, "options": {"test_size": 300}},
    "model": {"name": "mlp", "options": {"widths": [64]}},
    "loss": "cross_entropy",
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "schedule": {"name": "cosine-cyclic", "period": 2},
    "train": {"epochs": 2, "batch_size": {"kind": "cyclic", "low": 32, "high": 64, "period": 2},
              "replacement": True, "threads": 1, "tensorboard": "tb"},
    "measure": [{"name": "hessian", "every": 8, "k": 2, "trace_probes": 10, "eval_subset": 256},
                {"name": "alignment", "at": [0, 32], "k": 3},
                {"name": "trajectory", "path": "t", "every_steps": 5, "every_epochs": None}],
}


@pytest.mark.parametrize("override", [
    "optimizer.lrr=0.1", "optimizer.lr=-1", "optimizer.name=sdg", "train.epoch=3",
    "train.batch_size=0", "train.batch_size=half", "train.dtype=float16", "train.device=gpu",
    "data.options.n_trian=10", "model.options.activaton=relu", "schedule.gama=0.1",
    "loss=hinge", "measure=[{name: hessian, kk: 1}]", "store.path=3",
])
def test_schema_rejects_what_the_validator_rejects(validator, override):
    assert schema_errors(validator, README_STYLE) == []
    validate_config(README_STYLE)
    bad = apply_overrides(README_STYLE, [override])
    with pytest.raises(ConfigError):
        validate_config(bad)
    assert schema_errors(validator, bad), override


def test_cli_prints_the_schema(capsys):
    assert main(["config", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(json_schema()))
    assert printed["title"] == "sgdlab run config"
    sgd = next(r["then"] for r in printed["$defs"]["OptimizerSection"]["allOf"]
               if r["if"]["properties"]["name"]["const"] == "sgd")
    assert sgd["properties"]["lr"]["minimum"] == 0 and sgd["additionalProperties"] is False


def test_schema_lists_where_entropy_sgds_weight_decay_acts(validator):
    for name in ("entropy_sgd", "hj"):
        rule = next(r["then"] for r in json_schema()["$defs"]["OptimizerSection"]["allOf"]
                    if r["if"]["properties"]["name"]["const"] == name)
        assert rule["properties"]["weight_decay_on"]["default"] == "inner", name
    raw = {**README_STYLE, "optimizer": {"name": "entropy_sgd", "weight_decay": 1e-3,
                                         "weight_decay_on": "both"}}
    assert schema_errors(validator, raw) == []
    validate_config(raw)


@pytest.mark.parametrize("optimizer, schedule", [
    ({"name": "entropy-sgd", "lr": 1.0, "L": 2, "gamma": 1.0}, {"name": "cosine_cyclic",
                                                                 "period": 2}),
    ({"name": "gld_const", "lr": 0.1, "sigma": 0.01}, {"name": "polynomial_decay",
                                                       "power": 0.5}),
])
def test_schema_accepts_the_other_spelling_as_the_validator_does(validator, optimizer,
                                                                  schedule):
    raw = {**README_STYLE, "optimizer": optimizer, "schedule": schedule}
    assert schema_errors(validator, raw) == []
    validate_config(raw)
    # and checks its arguments as the registered spelling's
    bad = {**raw, "optimizer": {**optimizer, "lrr": 0.1}}
    assert schema_errors(validator, bad)
