"""The identifier systems, code systems and extensions of the bridge (README, "FHIR R4 bridge"),
and the value maps between FHIR codes and the contract's. One place, read by both directions."""

from __future__ import annotations

import re

#: the person's pseudonym (never an INS: its OIDs are for qualified identities only)
PSEUDONYM = "urn:parcours:pseudo"
#: a registered structure, by slug (`dac-31`), and a structure kind (`dac`, `cpts`, `crt`)
STRUCTURE = "urn:parcours:structure"
KIND = "urn:parcours:structure-kind"
#: the contract's categories, evaluation types, admission decisions, referral statuses, ruptures
CATEGORY = "urn:parcours:category"
EVALUATION_TYPE = "urn:parcours:evaluation-type"
ADMISSION = "urn:parcours:admission-decision"
#: Task.output types of an admission decision: `alternative`, the structure a refusal proposes instead
ADMISSION_OUTPUT = "urn:parcours:admission-output"
REFERRAL_STATUS = "urn:parcours:referral-status"
RUPTURE_TYPE = "urn:parcours:rupture-type"
#: the codes of the consent-method extension and of the referral-context extension's `type`
CONSENT_METHOD = "urn:parcours:consent-method"
CONTEXT_TYPE = "urn:parcours:referral-context-type"
#: Parcours' ids of what FHIR ids cannot always hold (`_` and `:` are allowed in ours)
ID_SYSTEM = {"EpisodeOfCare": "urn:parcours:case", "ServiceRequest": "urn:parcours:referral",
             "Communication": "urn:parcours:message", "Observation": "urn:parcours:evaluation",
             "Consent": "urn:parcours:consent", "Flag": "urn:parcours:rupture", "Task": "urn:parcours:event"}

EXT_CONTEXT = "urn:parcours:ext:referral-context"  # nested: type (valueCode), date (valueDate)
EXT_METHOD = "urn:parcours:ext:consent-method"  # valueCode oral | written | digital
EXT_VOLET = "urn:parcours:ext:volet"  # valueInteger 1 | 2 (the CRT's offer)
EXT_SECRET = "urn:parcours:ext:signing-secret"  # noqa: S105 - the extension's url, not a secret; valueString, in the answer to a Subscription only

CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
#: ANS terminologie CISIS: the GIR of an AGGIR grid (TDDUI), GIR 1 to 6
CISIS = "https://smt.esante.gouv.fr/fhir/CodeSystem/terminologie-cisis"
GIR_CODE = {g: f"MED-{338 + g}" for g in range(1, 7)}
GIR_OF_CODE = {code: g for g, code in GIR_CODE.items()}

#: ServiceRequest.priority <-> urgency (stat is taken as the most urgent; it is answered asap)
URGENCY_OF_PRIORITY = {"routine": "routine", "urgent": "soon", "asap": "urgent", "stat": "urgent"}
PRIORITY_OF_URGENCY = {"routine": "routine", "soon": "urgent", "urgent": "asap"}
#: Task.status <-> a referral's status (a redirection: rejected + businessStatus `redirected`)
STATUS_OF_TASK = {"received": "acknowledged", "accepted": "accepted", "rejected": "declined", "cancelled": "withdrawn",
                  "completed": "completed"}
TASK_OF_STATUS = {"acknowledged": "received", "accepted": "accepted", "declined": "rejected", "redirected": "rejected",
                  "withdrawn": "cancelled", "completed": "completed"}
#: a referral's current status -> ServiceRequest.status
REQUEST_OF_STATUS = {None: "active", "submitted": "active", "acknowledged": "active", "accepted": "active",
                     "redirected": "active", "declined": "revoked", "withdrawn": "revoked", "completed": "completed"}

#: the Subscriptions backport (HL7 IG 1.1.0): the topic Parcours publishes, the profiles and extensions
TOPIC = "urn:parcours:SubscriptionTopic:case-changes"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
EXT_PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
EXT_HEARTBEAT = BACKPORT + "backport-heartbeat-period"
NOTIFICATION_PROFILE = BACKPORT + "backport-subscription-notification-r4"
STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def fhir_id(value: str) -> str | None:
    """`value` as a FHIR resource id, or None when FHIR's id syntax cannot hold it."""
    return value if _FHIR_ID.match(value) else None
