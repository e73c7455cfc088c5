"""The worklist, feedback and agreement on a real store: order priority, AI escalation that
never lowers, read/unread, radiologist verdicts and final-report comparison."""

from __future__ import annotations

from engine.model import Finding, Identifier, Order, Patient, Status
from engine.store.base import NewMessage, Outcome, open_store
from engine.store.clinical import InstanceMeta
from engine.store.inference import AuditEntry, JobState
from engine.store.results import FeedbackEntry, FinalReportEvent, WorklistUpdate


async def make_case(store, n: int, priority: str = "R", accession: str | None = None,
                    study_uid: str | None = None) -> int:
    patient = Patient([Identifier(f"MRN{n}", "HOSP")], family_name="DOE", given_name="JANE",
                      birth_date="19700101", sex="F")
    accession = accession or f"ACC{n}"
    await store.apply_patient("A04", patient)
    await store.apply_orders([Order(patient, "NW", placer_number=f"PL{n}", filler_number=f"FI{n}",
                                    accession=accession, modality="CR", procedure_code="71046",
                                    procedure_text="XR CHEST", priority=priority)], None)
    uid = study_uid or f"1.2.826.0.1.3680043.10.{n}"
    await store.add_instance("pacs", InstanceMeta(uid, uid + ".1", uid + ".1.1", "1.2.840.10008"
                                                  ".5.1.4.1.1.1", "1.2.840.10008.1.2.1",
                                                  f"MRN{n}", "HOSP", accession, "CR", "CHEST"),
                             f"/data/{n}.dcm", 100, 30.0)
    cases = await store.complete_study(uid)
    assert len(cases) == 1
    return cases[0].id


async def apply(store, event) -> None:
    mid = await store.insert_message(NewMessage("ai-results", 0.0, b"{}"))
    await store.apply_outcomes([Outcome(mid, Status.TRANSFORMED, domain=event)])


async def test_worklist_ranks_by_priority_then_age_and_ai_only_raises(db_url: str) -> None:
    store = open_store(db_url)
    await store.open()
    try:
        routine = await make_case(store, 1, "R")
        urgent = await make_case(store, 2, "A")
        later = await make_case(store, 3, "R")
        assert [r.case_id for r in await store.list_worklist()] == [urgent, routine, later]

        flags = [{"code": "36118008", "display": "Pneumothorax", "probability": 0.93}]
        await apply(store, WorklistUpdate(later, "x", "STAT", "AI: Pneumothorax 0.93", flags))
        rows = await store.list_worklist()
        assert [r.case_id for r in rows] == [later, urgent, routine]
        top = rows[0]
        assert (top.priority, top.order_priority, top.reason) == ("STAT", "ROUTINE",
                                                                  "AI: Pneumothorax 0.93")
        assert top.ai_flags == flags and top.raised_at is not None

        await apply(store, WorklistUpdate(urgent, "x", "ROUTINE", "no finding", []))
        assert {r.case_id: r.priority for r in await store.list_worklist()}[urgent] == "URGENT"

        assert await store.mark_read(later)
        assert [r.case_id for r in await store.list_worklist()] == [urgent, routine]
        assert len(await store.list_worklist(include_read=True)) == 3
        assert not await store.mark_read(999)

        ctx = await store.report_context(routine)
        assert ctx is not None and ctx.patient is not None and ctx.order is not None
        assert (ctx.patient.patient_id, ctx.patient.issuer, ctx.patient.family) == (
            "MRN1", "HOSP", "DOE")
        assert (ctx.order.placer, ctx.order.accession, ctx.order.priority) == ("PL1", "ACC1", "R")
        assert [i.path for i in ctx.instances] == ["/data/1.dcm"]
        assert await store.report_context(999) is None
    finally:
        await store.close()


async def finish_with(store, case_id: int, findings: list[Finding]) -> None:
    (job,) = await store.enqueue_jobs(case_id, ["cxr"], 1)
    await store.claim_jobs(10, 1e12)
    audit = AuditEntry(job.id, case_id, "uid", "cxr", "1.0", "sum", "cpu", 1, "ok")
    await store.finish_job(job.id, JobState.DONE, findings, audit)


def finding(code: str) -> Finding:
    return Finding(code, code, "SCT", 0.9, False, "cxr", "1.0")


async def test_feedback_and_final_report_agreement(db_url: str) -> None:
    store = open_store(db_url)
    await store.open()
    try:
        a = await make_case(store, 1)
        b = await make_case(store, 2)
        await finish_with(store, a, [finding("PTX"), finding("EFF")])
        await finish_with(store, b, [finding("PTX")])

        await store.record_feedback([FeedbackEntry(a, "cxr", "1.0", "PTX", "accept",
                                                   reader="dr.who"),
                                     FeedbackEntry(b, "cxr", "1.0", "PTX", "reject")])
        (row,) = await store.agreement()
        assert (row.accepted, row.rejected, row.missed, row.agreement) == (1, 1, 0, 0.5)

        # The final report of case a confirms PTX, refutes EFF and has a NOD the model missed;
        # its verdict on PTX wins over the radiologist's click.
        model_codes = {"cxr|1.0": ["PTX", "EFF", "NOD"]}
        await apply(store, FinalReportEvent("ACC1", None, None, ["PTX", "NOD", "OTHER"], "F",
                                            model_codes))
        (row,) = await store.agreement()
        assert (row.accepted, row.rejected, row.missed) == (1, 2, 1)
        verdicts = {(f.code, f.source): f.verdict for f in await store.list_feedback(a)}
        assert verdicts == {("PTX", "radiologist"): "accept", ("PTX", "final_report"): "accept",
                            ("EFF", "final_report"): "reject", ("NOD", "final_report"): "missed"}

        # A corrected final report replaces all the earlier one said (the NOD miss too).
        await apply(store, FinalReportEvent("ACC1", None, None, ["EFF"], "C", model_codes))
        (row,) = await store.agreement()
        assert (row.accepted, row.rejected, row.missed) == (1, 2, 0)
        # A report for an accession we never saw changes nothing.
        await apply(store, FinalReportEvent("NOPE", None, None, ["PTX"], "F", model_codes))
        assert len(await store.list_feedback()) == 4
    finally:
        await store.close()


async def test_unknown_domain_event_is_ignored(db_url: str) -> None:
    store = open_store(db_url)
    await store.open()
    try:
        await apply(store, None)
        assert await store.list_worklist() == []
    finally:
        await store.close()
