"""Spend intelligence (issue 14): is this spend normal, who owns it, does a model cost what it
did. Pure detectors over the daily usage (a store's `usage_by_day` frame), vectorised: one
frame in, one frame of findings out, no per-key Python loop.

daily.py     the daily usage the detectors read, checked once (`checked`)
baseline.py  a subject's normal day: median and MAD of its trailing covered days
anomaly.py   a key's (and key x model's) day far above its own normal
"""

from costwatch.detect.anomaly import anomalies

__all__ = ["anomalies"]
