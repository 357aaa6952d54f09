"""The scheduler's job store (APScheduler's SQLAlchemyJobStore table `apscheduler_jobs`), read
only: APScheduler writes it, `publisher schedule status` reads the next run time from it."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def next_run_timestamp(jobstore: Path, job_id: str) -> float | None:
    """The stored next run time (POSIX seconds) of job `job_id`; None when the store, the job
    or its time is missing or the file is not a readable job store."""
    if not jobstore.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{jobstore}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT next_run_time FROM apscheduler_jobs WHERE id = ?", (job_id,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    if not row or row[0] is None:
        return None
    return row[0]
