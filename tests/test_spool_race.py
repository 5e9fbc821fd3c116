"""Workers starting at the same moment on one spool directory never remove each other's spool folder.

Each start clears the folders of killed workers (their lock is free); a folder created but not yet locked
must not look like one. Found when test suites of several checkouts started workers on one /tmp at once.
"""

from __future__ import annotations

import threading

from worker.serving.spool import SpoolRoot, remove_stale


def test_starting_workers_keep_their_folders_while_others_clear_stale_ones(tmp_path):
    stop = threading.Event()

    def clear_stale_forever() -> None:  # what every other worker starting now does
        while not stop.is_set():
            remove_stale(tmp_path)

    sweepers = [threading.Thread(target=clear_stale_forever) for _ in range(2)]
    for sweeper in sweepers:
        sweeper.start()
    roots, errors = [], []
    try:
        for _ in range(200):
            try:
                roots.append(SpoolRoot(tmp_path))
            except OSError as error:
                errors.append(error)
    finally:
        stop.set()
        for sweeper in sweepers:
            sweeper.join()
    try:
        assert errors == []
        assert [root.path for root in roots if not (root.path / ".lock").exists()] == []
    finally:
        for root in roots:
            root.close()
