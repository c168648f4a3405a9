"""A client generated from the served `/openapi.json` runs the member flow against a served instance.

Members generate their own clients; this is the regression test for that promise. `openapi-python-client`
builds a Python package from the document a served `ledger serve` hands out (failing on any warning),
and the flow goes through the generated methods and models, with the session's real Celery worker
scoring in between: report, batch, read back, look up (single and batch), dispute, respond, and the
subject report as JSON and as a page. Every answer must parse into the generated model of its operation
(a missing `required` field, an undeclared enum value or a mistyped time fails there), and the test
checks the types a member's code relies on: model classes, `datetime`, `Enum`.

It does not replace the hand-written client library (`clients/python/`): it guards the document.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from ledger.config import Settings
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from tests.support import ServedApp, WorkerProcess, incident_body, wait_for

PACKAGE = "ccl_generated_client"
PHONE = {"type": "phone", "value": "13800138000"}
OTHER_PHONE = {"type": "phone", "value": "13700137000"}


@pytest.fixture
def served(settings: Settings, clean: None) -> Iterator[ServedApp]:
    app = ServedApp(settings, workers=1).start()
    yield app
    app.stop()


@pytest.fixture
def generated(served: ServedApp, tmp_path: Path) -> Iterator[types.ModuleType]:
    """The package openapi-python-client generates from the served document, imported."""
    with urllib.request.urlopen(served.base + "/openapi.json", timeout=10) as response:  # noqa: S310
        (tmp_path / "openapi.json").write_bytes(response.read())
    ruff = Path(sys.executable).parent / "ruff"
    (tmp_path / "config.yaml").write_text(
        f"package_name_override: {PACKAGE}\n"
        f"post_hooks:\n  - {ruff} check . --fix-only --extend-select=I\n  - {ruff} format .\n"
    )
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "openapi-python-client"),
            "generate",
            "--path",
            str(tmp_path / "openapi.json"),
            "--config",
            str(tmp_path / "config.yaml"),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / PACKAGE),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout, done.stdout
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def module(package: types.ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def key(rt: Runtime, slug: str, scopes: str) -> str:
    operator = set(scopes.split(",")) <= platform_service.OPERATOR_SCOPES  # consumer rights: the operator's
    return platform_service.create_platform(rt, slug, slug.title(), scopes, operator=operator).key


@pytest.mark.timeout(180)
def test_the_member_flow_through_a_generated_client(
    generated: types.ModuleType, served: ServedApp, rt: Runtime, worker: WorkerProcess
) -> None:
    models = module(generated, "models")
    api = {
        name: module(generated, f"api.{group}.{name}")
        for group, names in {
            "incidents": ("report_incident", "report_incident_batch", "get_incident"),
            "lookups": ("lookup", "lookup_batch", "get_lookup"),
            "disputes": (
                "open_dispute",
                "list_disputes",
                "respond_to_dispute",
                "subject_report",
                "subject_report_html",
            ),
        }.items()
        for name in names
    }

    def client(token: str) -> Any:
        return generated.AuthenticatedClient(base_url=served.base, token=token, timeout=10.0)

    alpha = client(key(rt, "alpha", "report,lookup"))
    beta = client(key(rt, "beta", "report,lookup"))
    operator = client(key(rt, "operator", "dispute"))

    # Report one incident, then a batch: created, a replay of it, a conflict, an invalid identifier.
    created = api["report_incident"].sync_detailed(
        client=alpha, body=models.Incident.from_dict(incident_body("gen-1"))
    )
    assert created.status_code == 201, created.content
    incident = created.parsed
    assert isinstance(incident, models.IncidentCreated)
    assert incident.status is models.IncidentStatus.ACTIVE

    batch_items = [
        incident_body("gen-2", identifiers=[OTHER_PHONE]),
        incident_body("gen-1"),
        incident_body("gen-1", category="return_fraud"),
        incident_body("gen-3", identifiers=[{"type": "phone", "value": "12"}]),
    ]
    batch = api["report_incident_batch"].sync(
        client=alpha,
        body=models.IncidentBatch(incidents=[models.Incident.from_dict(item) for item in batch_items]),
    )
    assert isinstance(batch, models.IncidentBatchResult)
    first, replay, conflict, invalid = batch.results
    for item in (first, replay):
        assert isinstance(item, models.IncidentBatchCreated)
        assert isinstance(item.incident, models.IncidentCreated)
        assert isinstance(item.kind, Enum)
    assert [first.status.value, replay.status.value] == [201, 200]
    assert replay.incident.id == incident.id
    for item, status in ((conflict, 409), (invalid, 422)):
        assert isinstance(item, models.IncidentBatchProblem)
        assert item.status.value == status
        assert item.problem.status == status
    assert "identifiers.0.value" in invalid.problem.errors.to_dict()

    read_back = api["get_incident"].sync(client=alpha, incident_id=incident.id)
    assert isinstance(read_back, models.IncidentSchemaOut)
    assert isinstance(read_back.occurred_at, datetime)
    assert read_back.category is models.Category.FABRICATED_EVIDENCE
    assert read_back.evidence.pdq == []

    # Look up once the worker has scored the report: a tier (an Enum), and the time it was computed.
    lookup_body = models.Lookup.from_dict({"identifiers": [PHONE], "purpose": "refund_review"})

    def scored() -> Any:
        answer = api["lookup"].sync(client=beta, body=lookup_body)
        return answer if answer.computed_at is not None and not answer.stale else None

    answer = wait_for(scored, timeout=30, interval=0.3)
    assert isinstance(answer, models.LookupResult)
    assert isinstance(answer.computed_at, datetime)
    assert isinstance(answer.decision.tier, models.Tier)
    assert answer.decision.tier is not models.Tier.CLEAR
    assert all(isinstance(r, models.Restriction) for r in answer.decision.restrictions)
    assert isinstance(answer.summary.last_incident_at, datetime)
    assert answer.adverse_action is None or isinstance(answer.adverse_action, models.AdverseAction)
    assert answer.evidence_matches == []
    again = api["get_lookup"].sync(client=beta, lookup_id=answer.lookup_id)
    assert isinstance(again, models.LookupResult)
    assert again.to_dict() == answer.to_dict()

    looked = api["lookup_batch"].sync(
        client=beta,
        body=models.LookupBatch(
            lookups=[
                lookup_body,
                models.Lookup.from_dict(
                    {"identifiers": [{"type": "phone", "value": "12"}], "purpose": "refund_review"}
                ),
            ]
        ),
    )
    assert isinstance(looked, models.LookupBatchResult)
    answered, refused = looked.results
    assert isinstance(answered, models.LookupBatchAnswered)
    assert isinstance(answered.lookup, models.LookupResult)
    assert answered.lookup.decision.tier is answer.decision.tier
    assert isinstance(refused, models.LookupBatchProblem)
    assert refused.status.value == 422

    # The consumer disputes the first incident through the operator; the reporter upholds it.
    opened = api["open_dispute"].sync_detailed(
        client=operator,
        body=models.DisputeOpen.from_dict({"identifiers": [PHONE], "incident_id": str(incident.id)}),
    )
    assert opened.status_code == 201, opened.content
    [dispute] = opened.parsed.disputes
    assert isinstance(dispute, models.DisputeSchemaOut)
    assert dispute.status is models.DisputeStatus.OPEN
    assert isinstance(dispute.respond_by, datetime)

    listed = api["list_disputes"].sync(client=alpha, status=models.DisputeStatus.OPEN)
    assert isinstance(listed, models.DisputeList)
    [pending] = listed.disputes
    assert isinstance(pending, models.DisputeForReporter)
    assert pending.basis is None
    assert pending.resolved_at is None

    upheld = api["respond_to_dispute"].sync(
        client=alpha,
        dispute_id=dispute.id,
        body=models.DisputeResponse(
            outcome=models.DisputeResponseOutcome.UPHELD, basis=models.Confirmation.MERCHANT_EVIDENCE
        ),
    )
    assert isinstance(upheld, models.DisputeSchemaOut)
    assert upheld.status is models.DisputeStatus.UPHELD
    [resolved] = api["list_disputes"].sync(client=alpha, status=models.DisputeStatus.UPHELD).disputes
    assert resolved.basis is models.Confirmation.MERCHANT_EVIDENCE
    assert isinstance(resolved.resolved_at, datetime)

    # The subject access report: typed JSON from one operation, the printable page from the other.
    subject = models.SubjectReportRequest.from_dict({"identifiers": [PHONE]})
    report = api["subject_report"].sync(client=operator, body=subject)
    assert isinstance(report, models.SubjectReport)
    assert isinstance(report.generated_at, datetime)
    assert {i.id for i in report.incidents} == {str(incident.id)}
    [reported] = report.incidents
    assert isinstance(reported, models.ReportIncident)
    assert reported.status is models.IncidentStatus.ACTIVE
    assert reported.platform.slug == "alpha"
    [reported_dispute] = reported.disputes
    assert reported_dispute.status is models.DisputeStatus.UPHELD
    assert {lk.purpose for lk in report.lookups} == {models.Purpose.REFUND_REVIEW}
    assert all(isinstance(lk.at, datetime) for lk in report.lookups)
    page = api["subject_report_html"].sync_detailed(client=operator, body=subject)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert isinstance(page.parsed, str)
    assert "<html" in page.parsed
    assert "Alpha" in page.parsed
