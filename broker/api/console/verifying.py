"""The auditor's "verify a range" as a background job the page follows with a progress bar.

A Merkle log is verified from its first entry (each leaf extends the tree the checkpoints sign), so
verifying entries `first`..`last` reads the log from 0 and reports, beside the whole prefix's
verdict, the signatures and findings within the range asked for. Jobs live in the process; the
verdict a person keeps is `broker audit verify`'s, which this page runs the same checks of.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from broker.api.records import Records
from broker.audit.stores.proving import checkpoints_of
from broker.audit.verify import LogVerifier
from broker.core.trust import TrustStore

MAX_JOBS = 20


@dataclass
class VerifyJob:
    job_id: str
    first: int
    last: int
    done: int = 0
    finished: bool = False
    ok: bool | None = None
    summary: str = ""
    finding: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def percent(self) -> int:
        return 100 if self.finished else int(100 * self.done / max(1, self.last + 1))

    def as_json(self) -> dict[str, object]:
        return {
            "job": self.job_id,
            "first": self.first,
            "last": self.last,
            "done": self.done,
            "percent": self.percent,
            "finished": self.finished,
            "ok": self.ok,
            "summary": self.summary,
            "finding": self.finding,
        }


class Verifications:
    def __init__(self, *, records: Records, trust: TrustStore) -> None:
        self._records = records
        self._trust = trust
        self._jobs: dict[str, VerifyJob] = {}

    def get(self, job_id: str) -> VerifyJob | None:
        return self._jobs.get(job_id)

    def start(self, first: int, last: int) -> VerifyJob:
        while len(self._jobs) >= MAX_JOBS:  # forget the oldest
            oldest = next(iter(self._jobs))
            old = self._jobs.pop(oldest)
            if old.task is not None:
                old.task.cancel()
        job = VerifyJob(job_id=secrets.token_hex(8), first=first, last=last)
        job.task = asyncio.create_task(self._run(job), name=f"console-verify-{job.job_id}")
        self._jobs[job.job_id] = job
        return job

    async def _run(self, job: VerifyJob) -> None:
        try:
            async with self._records.log() as source:
                checkpoints = await checkpoints_of(source)
                origin = checkpoints[0].body.origin if checkpoints else None
                verifier = LogVerifier(trust=self._trust, origin=origin)
                async for row in source.rows(0):
                    if row.index > job.last or verifier.feed(row) is not None:
                        break
                    job.done = verifier.size
                    if job.done % 500 == 0:
                        await asyncio.sleep(0)  # let the page's progress requests in
            report = verifier.finish()
            job.finding = None if report.finding is None else str(report.finding)
            job.ok = report.finding is None
            job.summary = (
                f"{report.size} entries, root {report.root.hex()}; {report.checkpoints} checkpoints, "
                f"{report.envelopes} envelope signatures, {report.witnesses} witness records"
            )
        except Exception as exc:
            job.ok, job.finding = False, f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = True

    async def close(self) -> None:
        for job in self._jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()
