"""A short soak (benchmarks/soak.py): 200 mixed requests from 16 clients through real worker and bridge
processes, with malformed requests and clients hanging up mid-upload and mid-download; every answer as
expected, no ERROR in the logs, RSS growth under 10%, threads, descriptors and spool files back to their
baseline. `python -m benchmarks.soak` runs the full 2,000."""

from __future__ import annotations

from benchmarks.soak import soak


def test_a_short_soak_meets_every_target(tmp_path):
    report = soak(tmp_path, requests=200, clients=16, malformed=0.1, aborts=0.1, seed=7, big_slices=12)
    print(report.table())
    kinds = {o.planned.kind for o in report.outcomes}
    assert kinds == {"ok", "malformed", "abort-upload", "abort-download"}  # every kind was sent
    assert not report.failures, "\n".join([report.table(), *report.failures[:20]])
