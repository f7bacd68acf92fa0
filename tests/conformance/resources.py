"""Every resource the FHIR bridge serves for the reference story and a demo-like story (Bundles
as each structure sees them, the cases alone, CapabilityStatements, Subscription answers,
notifications, OperationOutcomes, the project's own definitions), and every sample the tests
post, all made by the bridge's own functions: no broker, no HTTP."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from parcours.casefile.policy import Viewer
from parcours.casefile.state import fold_all
from parcours.casefile.view import project
from parcours.fhir import codes, definitions, inbound, outbound
from parcours.fhir.errors import FhirError
from tests.doors import BEHAVIOURS, World, fhir_resource
from tests.factories import ev
from tests.fixtures.make_story import HERE
from tests.unit import test_fhir as samples

BASE = "https://edge.example/fhir/r4"
KINDS = {"dac-31": "dac", "cpts-31-nord": "cpts", "cpts-31-sud": "cpts", "crt-31-muret": "crt", "crt-31-nord": "crt"}
Resources = dict[str, dict[str, Any]]


def _demo_events() -> list[Any]:
    """A story like the demo's: every item kind, every status and decision, and ids outside FHIR's
    id syntax (`_`, `:`), as the contract allows them."""
    case, person = "case_demo:1", {"pseudonym": "P-a41f07", "birth_year": 1936, "postcode": "31600"}

    def e(event_type: str, at: int, source: str = "dac-31", **kw: Any) -> Any:
        return ev(event_type, case_id=case, source=source, at=at, **kw)
    return [
        e("ReferralSubmitted", 0, "cpts-31-nord", referral_id="ref_a:1", to_structure="dac-31", person=person, context=None),
        e("ReferralStatusChanged", 1, referral_id="ref_a:1", status="acknowledged", reason="reçu"),
        e("ReferralStatusChanged", 2, referral_id="ref_a:1", status="accepted"),
        e("ConsentRecorded", 3, consent_id="cons_a:1", grantee="crt-31-muret", categories=["functional", "social", "discussion"],
          valid_until=ev("MessagePosted").occurred_at + timedelta(days=365)),
        e("ConsentRecorded", 4, consent_id="cons_a:2", grantee="cpts", categories=["discussion"], decision="deny", method="written"),
        e("EvaluationRecorded", 5, evaluation_id="eval_a:1", results={"transferts": "B", "toilette": ""}),
        e("EvaluationRecorded", 6, evaluation_id="eval_a:2", type="multidimensional", category="medical", gir=None,
          results={"polymedication": "8 molécules"}),
        e("ReferralSubmitted", 7, referral_id="ref_a:2", to_structure="crt-31-muret", person=person, urgency="urgent"),
        e("ReferralStatusChanged", 8, "crt-31-muret", referral_id="ref_a:2", status="acknowledged"),
        e("MessagePosted", 9, "crt-31-muret", message_id="msg_a:1", body="Visite d'évaluation jeudi 10h."),
        e("MessagePosted", 10, message_id="msg_a:2", body="Merci.", reply_to="msg_a:1", category="discussion"),
        e("AdmissionDecided", 11, "crt-31-muret", referral_id="ref_a:2", decision="admitted", volet=2),
        e("ReferralSubmitted", 12, referral_id="ref_a:3", to_structure="crt-31-nord", person=person, urgency="routine", context=None),
        e("ReferralStatusChanged", 13, "crt-31-nord", referral_id="ref_a:3", status="redirected", redirect_to="crt-31-muret"),
        e("AdmissionDecided", 14, "crt-31-nord", referral_id="ref_a:3", decision="refused", volet=1, start_date=None,
          reasons=["hors zone"], alternative="crt-31-muret"),
        e("AdmissionDecided", 15, "crt-31-nord", referral_id="ref_a:3", decision="waitlisted", volet=2, start_date=None),
        e("ReferralSubmitted", 16, referral_id="ref_a:4", to_structure="cpts-31-sud", person=person, urgency="soon"),
        e("ReferralStatusChanged", 17, "cpts-31-sud", referral_id="ref_a:4", status="declined", reason="hors secteur"),
        e("ReferralSubmitted", 18, referral_id="ref_a:5", to_structure="cpts-31-sud", person=person),
        e("ReferralStatusChanged", 19, referral_id="ref_a:5", status="withdrawn"),
        e("ReferralSubmitted", 20, referral_id="ref_a:6", to_structure="cpts-31-sud", person=person),
        e("ReferralStatusChanged", 21, "cpts-31-sud", referral_id="ref_a:6", status="completed", reason="Médecin traitant trouvé."),
        e("RuptureReported", 22, rupture_id="rup_a:1", type="no_gp"),
    ]


def served() -> Resources:
    """What the bridge serves: Bundles and cases, metadata, Subscription answers, notifications,
    OperationOutcomes, definitions."""
    out: Resources = {}
    views = json.loads((HERE / "story.views.json").read_text())
    events = _demo_events()
    for slug, kind in KINDS.items():
        view = project(fold_all(events[0].case_id, events), Viewer(slug, kind), samples.POLICY, samples.NOW)
        if view is not None:
            views[f"{slug}/demo"] = view
    for key, view in views.items():
        name = key.replace("/", "__")
        out[f"bundle__{name}"] = json.loads(outbound.case_bundle(view, BASE))
        out[f"episode__{name}"] = json.loads(outbound.episode(view))
    for kind in ("dac", "cpts", "crt"):
        out[f"metadata__{kind}"] = json.loads(outbound.capability_statement(kind, BASE, "0.1.0"))
    for content, heartbeat in (("id-only", 30), ("empty", None)):
        out[f"subscription__{content}"] = json.loads(outbound.subscription_answer("sub-dac-31", BASE, "https://p.example/h", content, heartbeat, "s3cret"))
    note = {"notification_id": "n", "type": "item_visible", "case_id": "case_demo:1", "item": "message:msg_a:1", "view_version": 3, "sequence": 12}
    out["notification__handshake"] = json.loads(outbound.notification("handshake", "sub-dac-31", BASE, 0))
    out["notification__heartbeat"] = json.loads(outbound.notification("heartbeat", "sub-dac-31", BASE, 4))
    out["notification__event"] = json.loads(outbound.notification("event-notification", "sub-dac-31", BASE, 5, note))
    out["notification__event_empty"] = json.loads(outbound.notification("event-notification", "sub-dac-31", BASE, 5, note, "empty"))
    out["outcome__accepted"] = json.loads(outbound.accepted("MessagePosted", "e-1", {"message_id": "msg-1", "case_id": "case-1"}))
    for i, (resource_type, raw, _expression, _code) in enumerate(samples.RULES + samples.R4_RULES):
        try:
            inbound.parse(resource_type, raw)
        except FhirError as exc:
            out[f"outcome__refusal_{i}"] = json.loads(outbound.outcome(exc.issues))
    return out


def own_definitions() -> Resources:
    return {f"{d['resourceType']}__{d['id']}": d for d in definitions.all_definitions()}


def posted() -> Resources:
    """Every resource the tests post on the FHIR routes, the valid and those refused: samples.RULES
    (the bridge's rules), samples.R4_RULES (what R4 refuses), the doors' and the integration tests'."""
    admission = samples.task(status="completed", executionPeriod={"start": "2026-12-07"}, extension=[
        {"url": codes.EXT_VOLET, "valueInteger": 2}], businessStatus={"coding": [{"system": codes.ADMISSION, "code": "admitted"}]})
    out: Resources = {
        "service_request": samples.service_request(), "task": samples.task(), "admission": admission, "consent": samples.consent(),
        "communication": samples.communication(), "observation": samples.observation(), "subscription": samples.SUBSCRIPTION,
    }
    out |= {f"rule_{i}": raw for i, (_t, raw, _e, _c) in enumerate(samples.RULES)}
    out |= {f"r4_rule_{i}": raw for i, (_t, raw, _e, _c) in enumerate(samples.R4_RULES)}
    world = World(case_id="case-1", referral_id="ref-1")
    for i, behaviour in enumerate(BEHAVIOURS):
        out[f"door_{i}"] = fhir_resource(behaviour.attempt(world))[1]
    return out
