"""``opsbook lab ...`` (placeholder until the lab lands)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="the lab daemon host")
    p.set_defaults(func=lambda args: 0)
