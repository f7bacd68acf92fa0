"""The Kafka side of Parcours as an AsyncAPI 3.0 document, generated from `topics/catalogue.yaml`
and `schemas/` (never written by hand): a channel per topic (one parameterised channel per
per-structure topic, `{structure}` among the registry's slugs), the Avro payloads of the event
types each carries, their CloudEvents headers, the Kafka bindings (key, partitions, replicas,
cleanup policy, retention), who sends and who receives (each operation names its principals and,
for services, their consumer group), and the SASL/SCRAM security scheme.

`parcours asyncapi` writes `docs/asyncapi.json`; each adapter serves `/asyncapi.json`, the part
its kind's structures may use on Kafka (their ACLs: their ingress, views, inbox, the observatory
for a DAC). A unit test keeps the committed file equal to `render()`, fails when a catalogue
topic has no channel, and validates the document with the official AsyncAPI parser (npm).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from parcours.contract.codec import CE_TYPE_PREFIX, CONTENT_TYPE, H_FINGERPRINT
from parcours.contract.directory import offer_schema_raw
from parcours.contract.schemas import SchemaSet
from parcours.topology.catalogue import Catalogue, TopicSpec

AVRO_FORMAT = "application/vnd.apache.avro+json;version=1.9.0"
BINDING_VERSION = "0.5.0"
#: the topic settings the Kafka channel binding (0.5.0) describes
_BINDING_CONFIG = {"cleanup.policy", "retention.ms", "retention.bytes", "delete.retention.ms", "max.message.bytes"}


def logical_name(catalogue: Catalogue, t: TopicSpec) -> str:
    """A topic's name without the deployment prefix, `<slug>` folded out of per-structure topics."""
    name = t.name[len(catalogue.prefix) + 1:]
    return name.rsplit(".", 1)[0] if t.owner else name


def dumps(doc: dict[str, Any]) -> str:
    """The document as the committed file and `parcours asyncapi` write it."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def render(catalogue: Catalogue, schemas: SchemaSet, *, kind: str | None = None, structure: str | None = None) -> dict[str, Any]:
    """The whole document, or the part a `kind`'s structures (or one `structure`) may use."""
    slugs = _slugs(catalogue, kind, structure)
    usable = _usable_topics(catalogue, slugs) if (kind or structure) else None
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    seen: set[str] = set()
    for t in catalogue.topics.values():
        logical = logical_name(catalogue, t)
        if logical in seen or (usable is not None and logical not in usable):
            continue
        seen.add(logical)
        channel_id = logical.replace("-", "_")
        channel_messages = _messages(catalogue, schemas, t, messages)
        channel: dict[str, Any] = {
            "address": f"{catalogue.prefix}.{logical}" + (".{structure}" if t.owner else ""),
            "title": logical + (".<slug>" if t.owner else ""),
            "description": f"{t.role} topic; key: {t.key}; value: {t.value}",
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in channel_messages},
            "bindings": {"kafka": _channel_binding(t)},
        }
        if t.owner:
            channel["parameters"] = {"structure": {
                "description": "the structure's slug (topics/structures.yaml); only it may read (or, for ingress, write) there",
                "enum": sorted(slugs)}}
        channels[channel_id] = channel
        operations |= _operations(catalogue, t, channel_id, channel_messages, usable is not None, slugs)
    doc: dict[str, Any] = {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Parcours event backbone" + (f" ({(structure or kind or '').upper()})" if usable is not None else ""),
            "version": "1",
            "description": ("Care-coordination events between DAC, CPTS and CRT on Kafka. Canonical events are "
                            "schemaless Avro with CloudEvents `ce_*` headers (binary mode), keyed by `case_id`; "
                            "readers resolve the writer schema by `ce_schemafingerprint`. Views, inboxes and the "
                            "observatory are JSON written by the case-file processor in Kafka transactions: read "
                            "them `read_committed`. Person data is pseudonymous."),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "production": {
                "host": "{bootstrap}", "protocol": "kafka-secure",
                "description": "SASL_SSL with SCRAM-SHA-512; one principal per structure (`parcours credentials <slug>`)",
                "variables": {"bootstrap": {"description": "the platform's bootstrap servers, host:port"}},
                "security": [{"$ref": "#/components/securitySchemes/scram"}],
            },
            "dev": {
                "host": "127.0.0.1:{port}", "protocol": "kafka",
                "description": "the embedded broker of `parcours broker start` (SASL_PLAINTEXT with SCRAM-SHA-512)",
                "variables": {"port": {"description": "printed by `parcours broker start`"}},
                "security": [{"$ref": "#/components/securitySchemes/scram"}],
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "securitySchemes": {"scram": {
                "type": "scramSha512",
                "description": "SASL/SCRAM-SHA-512; ACLs derived from topics/catalogue.yaml (`parcours topics acls`)"}},
        },
    }
    return doc


def _slugs(catalogue: Catalogue, kind: str | None, structure: str | None) -> list[str]:
    structures = catalogue.registry.structures
    if structure is not None:
        return [structure] if structure in structures else []
    return sorted(s.slug for s in structures.values() if kind is None or s.kind == kind)


def _usable_topics(catalogue: Catalogue, slugs: list[str]) -> set[str]:
    """The logical topics the structures' own principals may read or write (their ACLs)."""
    principals = {f"User:{s}" for s in slugs}
    names = {a.name for a in catalogue.acls() if a.principal in principals and a.resource == "topic"}
    return {logical_name(catalogue, t) for t in catalogue.topics.values() if t.name in names}


def _channel_binding(t: TopicSpec) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for k, v in sorted(t.config.items()):
        if k in _BINDING_CONFIG:
            config[k] = v.split(",") if k == "cleanup.policy" else int(v)
    binding: dict[str, Any] = {"topic": t.name} if not t.owner else {}  # a per-structure address is parameterised
    return {**binding, "partitions": t.partitions, "replicas": t.replication_factor, "topicConfiguration": config,
            "bindingVersion": BINDING_VERSION}


def _messages(catalogue: Catalogue, schemas: SchemaSet, t: TopicSpec, into: dict[str, Any]) -> list[str]:
    """The messages of a topic's channel, added to `into` (components): its event types, or one JSON message."""
    if t.role == "canonical":
        types = sorted(t.events)
    elif t.role == "directory":
        raw = copy.deepcopy(offer_schema_raw())  # never the shared one
        into["DirectoryOffer"] = {
            "name": "DirectoryOffer", "title": "DirectoryOffer", "summary": str(raw.get("doc", "")),
            "contentType": "application/vnd.apache.avro+binary",
            "payload": {"schemaFormat": AVRO_FORMAT, "schema": raw},
            "bindings": {"kafka": {"key": {"type": "string", "description": t.key}, "bindingVersion": BINDING_VERSION}},
        }
        return ["DirectoryOffer"]
    elif t.role == "ingress":
        kind = catalogue.registry.kind_of(t.owner) if t.owner else None
        types = sorted(et for et in catalogue.event_topic if kind is None or catalogue.may_publish(kind, et))
    else:
        name = "".join(part.capitalize() for part in logical_name(catalogue, t).replace("-", " ").split()) + "Record"
        into[name] = {
            "name": name, "title": f"a record of {logical_name(catalogue, t)}", "contentType": "application/json",
            "summary": t.value, "payload": {"type": ["object", "null"], "description": f"{t.value} (null: a tombstone)"},
            "bindings": {"kafka": {"key": {"type": "string", "description": t.key}, "bindingVersion": BINDING_VERSION}},
        }
        return [name]
    for et in types:
        newest = schemas.versions[et][-1]
        into[et] = {
            "name": et, "title": et, "summary": str(newest.raw.get("doc", "")), "contentType": CONTENT_TYPE,
            "headers": _cloudevents_headers(et, newest.ref, [v.fingerprint for v in schemas.versions[et]]),
            "payload": {"schemaFormat": AVRO_FORMAT, "schema": copy.deepcopy(newest.raw)},  # never the shared set
            "bindings": {"kafka": {"key": {"type": "string", "description": "case_id"}, "bindingVersion": BINDING_VERSION}},
        }
    return types


def _cloudevents_headers(event_type: str, ref: str, fingerprints: list[str]) -> dict[str, Any]:
    text = {"type": "string"}
    return {"type": "object", "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject",
                                           "content-type", H_FINGERPRINT],
            "properties": {
                "ce_specversion": {"const": "1.0"},
                "ce_id": {**text, "description": "the event_id (UUID)"},
                "ce_source": {**text, "description": "/structures/<slug> of the authoring structure"},
                "ce_type": {"const": CE_TYPE_PREFIX + event_type},
                "ce_time": {**text, "description": "occurred_at, RFC 3339 UTC"},
                "ce_subject": {**text, "description": "the case_id (also the record key)"},
                "content-type": {"const": CONTENT_TYPE},
                "ce_dataschema": {**text, "description": f"the writer schema, e.g. {ref}"},
                H_FINGERPRINT: {"enum": fingerprints, "description": "CRC-64-AVRO fingerprint of the writer schema (hex)"},
            }}


def _operations(catalogue: Catalogue, t: TopicSpec, channel_id: str, messages: list[str], partner_view: bool,
                slugs: list[str]) -> dict[str, Any]:
    refs = [{"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in messages]
    out: dict[str, Any] = {}
    for action, who in (("send", t.producers), ("receive", t.consumers)):
        names = sorted(who)
        if partner_view:  # a partner's document: what its structures do themselves
            if "owner" not in who and not (set(who) & {s.kind for s in catalogue.registry.structures.values() if s.slug in slugs}):
                continue
            names = ["owner" if t.owner else "structure"]
        op: dict[str, Any] = {"action": action, "channel": {"$ref": f"#/channels/{channel_id}"}, "messages": refs,
                              "summary": f"{'written' if action == 'send' else 'read'} by: {', '.join(names)}"}
        groups = sorted(catalogue.group_id(s) for s in who if s in catalogue.services and catalogue.services[s].groups
                        and not catalogue.services[s].per_kind)
        if action == "receive" and groups and not partner_view:
            op["bindings"] = {"kafka": {"groupId": {"type": "string", "enum": groups}, "bindingVersion": BINDING_VERSION}}
        out[f"{action}_{channel_id}"] = op
    return out
