"""Spend intelligence (issue 14): is this spend normal, who owns it, does a model cost what it
did. Pure detectors over the daily usage (a store's `usage_by_day` frame), vectorised: one
frame in, one frame of findings out, no per-key Python loop.

daily.py     the daily usage the detectors read, checked once (`checked`)
baseline.py  a subject's normal day: median and MAD of its trailing covered days
anomaly.py   a key's (and key x model's) day far above its own normal
rate.py      spend rate now: today so far against the same hours of normal days
unitcost.py  a model's cost per request (per 1k tokens) against its trailing median; $0 rows
keys.py      unowned spend, a key seen for the first time, a dormant key that starts again
owners.py    who answers for each key (`owners:`)
findings.py  every detector at once (`detect`), typed findings with owners; `due`: once per
             subject and day (a key's anomaly and its spend rate are one alert a day)
"""

from costwatch.detect.anomaly import anomalies
from costwatch.detect.findings import (
    Anomaly,
    Finding,
    KeyEvent,
    UnitCost,
    detect,
    due,
    identities,
)
from costwatch.detect.keys import key_events
from costwatch.detect.owners import owners_of
from costwatch.detect.rate import spend_rates
from costwatch.detect.unitcost import unit_costs

__all__ = [
    "Anomaly",
    "Finding",
    "KeyEvent",
    "UnitCost",
    "anomalies",
    "detect",
    "due",
    "identities",
    "key_events",
    "owners_of",
    "spend_rates",
    "unit_costs",
]
