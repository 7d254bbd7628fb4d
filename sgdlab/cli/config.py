"""``sgdlab config schema``: the run config's JSON Schema, for editors."""
from __future__ import annotations

import argparse

from sgdlab.strict_json import dumps


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "config", help="the run config's JSON Schema (editor completion and checks)",
        description="Print the JSON Schema of run configs (sgdlab train CONFIG): "
                    "`sgdlab config schema > sgdlab.schema.json`, then put "
                    "`# yaml-language-server: $schema=sgdlab.schema.json` at the top of a "
                    "YAML config so editors with the YAML language server complete and check "
                    "it. The schema lists the registered optimizers, schedules, instruments, "
                    "datasets and models with their arguments.")
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    schema = sub.add_parser("schema", help="print the JSON Schema of run configs",
                            description="Print the JSON Schema (draft 2020-12) of run configs.")
    schema.set_defaults(func=_schema)


def _schema(args: argparse.Namespace) -> int:
    from sgdlab.config import json_schema

    print(dumps(json_schema(), indent=1, ensure_ascii=False))
    return 0
