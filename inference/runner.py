"""One claimed job, start to finish: prepare -> batch -> forward -> re-link -> record.

Outcomes, by error type (see ``inference.errors``):

* success: job ``done``, its findings and an ``ok`` audit row in one transaction;
* ``TransientInferenceError`` (timeout, forward failure) or an unexpected error: an
  audit row, then back to ``queued`` with exponential backoff, or ``error`` once
  ``retries`` more attempts have failed;
* ``ServerUnavailable`` (a remote model's server is down or busy): back to ``queued``
  every ``5 x backoff`` seconds for as long as it lasts, the attempt refunded, so an
  outage of the server never fails a job (like deliveries to a destination that is down);
* ``NotApplicable`` / ``PreprocessError`` / ``DeidentificationRefused``: ``error`` at once;
* a model that did not load: ``error`` at once with the load failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass

from engine.logs import event
from engine.store.inference import AuditEntry, CaseContext, JobRow, JobState
from engine.store.protocols import JobWork
from inference.deid import PseudonymMap, deid_case
from inference.dispatch import Batcher, ItemResult
from inference.errors import (
    UNAVAILABLE,
    DeidentificationRefused,
    InferenceError,
    InferenceTimeout,
    NotApplicable,
    ServerUnavailable,
    TransientInferenceError,
)
from inference.models import InferenceModel, Prepared, StudyInput

log = logging.getLogger("radbridge.inference")


@dataclass(slots=True)
class Attempt:
    job: JobRow
    model: InferenceModel
    case: CaseContext
    started: float
    preprocess_ms: float | None = None

    def audit(self, status: str, result: ItemResult | None = None, outputs: str = "{}",
              error: str | None = None) -> AuditEntry:
        return AuditEntry(
            job_id=self.job.id, case_id=self.job.case_id, study_uid=self.case.study_uid,
            model=self.model.name, version=self.model.version, checksum=self.model.checksum,
            device=self.model.device, attempt=self.job.attempts, status=status,
            batch_size=result.batch_size if result else 0,
            queue_ms=result.queue_ms if result else None, preprocess_ms=self.preprocess_ms,
            forward_ms=result.forward_ms if result else None,
            total_ms=(time.perf_counter() - self.started) * 1000, outputs=outputs, error=error)


def _prepare_timed(model: InferenceModel, study: StudyInput) -> tuple[Prepared, float]:
    t0 = time.perf_counter()
    prepared = model.prepare(study)
    return prepared, (time.perf_counter() - t0) * 1000


class JobRunner:
    def __init__(self, store: JobWork, models: dict[str, InferenceModel], failed: dict[str, str],
                 batchers: dict[str, Batcher], pool: Executor,
                 backoff_secs: float = 2.0) -> None:
        self.store: JobWork = store
        self.models = models
        self.failed = failed
        self.batchers = batchers
        self.pool = pool
        self.backoff_secs = backoff_secs
        self.unavailable_secs = backoff_secs * 5  # a down server is tried this often

    async def run(self, job: JobRow) -> bool:
        """Run one claimed job; true when it made its case final."""
        model = self.models.get(job.model or "")
        case = await self.store.inference_case(job.case_id)
        if model is None or case is None or case.state == "cancelled":
            reason = ("case not found" if case is None else
                      "case cancelled before inference" if case.state == "cancelled" else
                      self.failed.get(job.model or "", "model unavailable"))
            return await self.store.finish_job(job.id, JobState.ERROR, [], None, reason)
        attempt = Attempt(job, model, case, time.perf_counter())
        try:
            return await self._attempt(attempt)
        except (NotApplicable, DeidentificationRefused) as exc:
            return await self._fail(attempt, "error", str(exc))
        except ServerUnavailable as exc:
            return await self._wait_for_server(attempt, str(exc))
        except (TransientInferenceError, TimeoutError) as exc:
            status = "timeout" if isinstance(exc, TimeoutError | InferenceTimeout) else "error"
            reason = str(exc) or f"no result within {model.config.timeout_secs:g}s"
            return await self._retry_or_fail(attempt, status, reason)
        except InferenceError as exc:
            return await self._fail(attempt, "error", str(exc))
        except Exception as exc:  # a bug in a model's code: retried, then recorded
            return await self._retry_or_fail(attempt, "error", f"{type(exc).__name__}: {exc}")

    async def _attempt(self, a: Attempt) -> bool:
        model = a.model
        paths = await self.store.case_instance_paths(a.case.study_uid)
        if not paths:
            raise NotApplicable("no instance files for the study")
        pseudo = None
        study_case = a.case
        if model.config.external:
            study = await self.store.pseudonymize_study(a.case.case_id, a.case.study_uid,
                                                        a.case.patient_id, a.case.accession)
            pseudo = PseudonymMap(study, a.case.study_uid)
            study_case = deid_case(a.case, pseudo)
        if not model.available() and not await model.recheck():
            # The server is down: wait without decoding the study again for nothing.
            raise ServerUnavailable(f"{UNAVAILABLE}{model.device} is still down")
        loop = asyncio.get_running_loop()
        prepared, a.preprocess_ms = await loop.run_in_executor(
            self.pool, _prepare_timed, model, StudyInput(study_case, paths, pseudo))
        if pseudo is not None:
            await self.store.save_pseudonyms(a.case.case_id, pseudo.kept())
        result = await asyncio.wait_for(self.batchers[model.name].submit(prepared, a.job.lane),
                                        model.budget_secs())
        await self._relink(a, result.output.study_uid)
        audit = a.audit("ok", result, json.dumps(result.output.outputs, default=str))
        final = await self.store.finish_job(a.job.id, JobState.DONE, result.output.findings,
                                            audit)
        event(log, "INF-202", "inference done", job=a.job.id, case=a.job.case_id,
              model=model.name, findings=len(result.output.findings),
              batch=result.batch_size, queue_ms=round(result.queue_ms, 1),
              forward_ms=round(result.forward_ms, 1))
        return final

    async def _relink(self, a: Attempt, seen_uid: str) -> None:
        """The model's result must come back to this case's study (via the pseudonym map for
        external models)."""
        real = (await self.store.real_for("study_uid", seen_uid) if a.model.config.external
                else seen_uid)
        if real != a.case.study_uid:
            raise InferenceError("the result does not re-link to the case's study")

    async def _retry_or_fail(self, a: Attempt, status: str, reason: str) -> bool:
        if a.job.attempts > a.model.config.retries:
            return await self._fail(a, status, f"{reason} (after {a.job.attempts} attempts)")
        delay = self.backoff_secs * 2 ** (a.job.attempts - 1)
        await self.store.retry_job(a.job.id, reason, time.time() + delay,
                                   a.audit(status, error=reason))
        event(log, "INF-301", "inference attempt failed, will retry", job=a.job.id,
              model=a.model.name, attempt=a.job.attempts, reason=status,
              level=logging.WARNING)
        return False

    async def _wait_for_server(self, a: Attempt, reason: str) -> bool:
        """The model's server is down: try again at a steady pace, attempts refunded; one
        audit row when the job starts waiting, not one per try."""
        waiting = (a.job.error or "").startswith(UNAVAILABLE)
        audit = None if waiting else a.audit("unavailable", error=reason)
        await self.store.retry_job(a.job.id, reason, time.time() + self.unavailable_secs,
                                   audit, refund=True)
        event(log, "INF-303", "model server unavailable, job waits", job=a.job.id,
              model=a.model.name, retry_secs=self.unavailable_secs, level=logging.WARNING)
        return False

    async def _fail(self, a: Attempt, status: str, reason: str) -> bool:
        event(log, "INF-402", "inference failed", job=a.job.id, case=a.job.case_id,
              model=a.model.name, attempt=a.job.attempts, level=logging.ERROR)
        return await self.store.finish_job(a.job.id, JobState.ERROR, [],
                                           a.audit(status, error=reason), reason)
