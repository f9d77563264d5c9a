"""A built-in Langdock Usage Export server on loopback: the real HTTP contract, scripted faults.

    server.py     `Simulator`: the API host (POST /export/api-keys) and the storage host
                  (signed downloads), every request recorded
    workspace.py  `Workspace`: deterministic usage for any range, by key and model
    faults.py     `Faults`: the next N matching requests answer as scripted

Used by `costwatch demo` and by the tests; never by a cycle against the real API.
"""

from costwatch.simulator.faults import Faults
from costwatch.simulator.server import EXPORT_PATHS, RecordedRequest, Simulator
from costwatch.simulator.workspace import KEY_NAMES, UsageRow, Workspace, export_csv

__all__ = [
    "EXPORT_PATHS",
    "KEY_NAMES",
    "Faults",
    "RecordedRequest",
    "Simulator",
    "UsageRow",
    "Workspace",
    "export_csv",
]
