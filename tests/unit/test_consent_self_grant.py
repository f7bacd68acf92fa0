"""A permit whose grantee is its own recorder (its slug, or its kind) stands only when written or
digital and naming its proof; what it discloses is flagged in the disclosure list."""

from __future__ import annotations

import pytest

from parcours.casefile.incremental import DictStore, IncrementalCaseFile
from parcours.contract.errors import EventValidationError
from parcours.publishing.errors import BadReference
from parcours.publishing.rules import check_stateless
from parcours.topology.catalogue import Catalogue
from tests.factories import T0, ev
from tests.unit.test_casefile_incremental import KINDS
from tests.unit.test_casefile_properties import POLICY

CAT = Catalogue.load()


@pytest.mark.parametrize(("fields", "field", "rule"), [
    ({"method": "oral", "proof": "doc-1"}, "method", "written or digital"),
    ({"method": "written"}, "proof", "names its proof"),
])
def test_a_permit_its_recorder_grants_itself_by_slug_needs_writing_and_proof(fields: dict, field: str, rule: str) -> None:
    with pytest.raises(EventValidationError) as err:
        ev("ConsentRecorded", source="dac-31", grantee="dac-31", **fields)
    assert any(f == field and rule in r for f, r in err.value.errors), err.value.errors


def test_a_permit_its_recorder_grants_its_own_kind_is_held_to_the_same_rule() -> None:
    crt = CAT.registry.structures["crt-31-muret"]
    with pytest.raises(BadReference) as err:
        check_stateless(CAT, crt, ev("ConsentRecorded", source="crt-31-muret", grantee="crt", method="oral"))
    assert {f["field"] for f in err.value.fields or []} == {"method", "proof"}
    check_stateless(CAT, crt, ev("ConsentRecorded", source="crt-31-muret", grantee="crt", method="digital", proof="dmp:doc-42"))
    # a deny, or a permit to another structure, needs nothing more
    check_stateless(CAT, crt, ev("ConsentRecorded", source="crt-31-muret", grantee="crt", method="oral", decision="deny"))
    check_stateless(CAT, crt, ev("ConsentRecorded", source="crt-31-muret", grantee="dac", method="oral"))


def test_what_a_self_granted_permit_discloses_is_flagged_in_the_audit() -> None:
    core, store = IncrementalCaseFile(KINDS, POLICY), DictStore()
    core.apply(store, "case-s", ev("ReferralSubmitted", case_id="case-s", source="dac-31", to_structure="crt-31-muret"), T0)
    core.apply(store, "case-s", ev("ConsentRecorded", case_id="case-s", source="crt-31-muret", grantee="crt",
                                   categories=["discussion"], method="written", proof="scan:form-7", consent_id="cons-self"), T0)
    out = core.apply(store, "case-s", ev("MessagePosted", case_id="case-s", source="dac-31", at=1), T0)
    by_consent = [a.body for a in out.audits if a.body["basis"] == "consent"]
    assert by_consent, [a.body for a in out.audits]
    assert all(a["self_granted"] is True and a["ref"] == "cons-self" for a in by_consent)
    assert all("self_granted" not in a.body for a in out.audits if a.body["basis"] != "consent")
