"""Erasing a person's identity by destroying their data keys (crypto-shredding), for the operator:
`parcours persons erase --case <case_id>`, as `svc-ops`.

The case's data keys are found on `person-activity` (keyed `<key id>/<case_id>`, written by the
processor for every case that carries a sealed identity); their persons (the handle each key
record names) on `identity-keys`; every live key of those persons gets a tombstone. Afterwards
the identity of that person reads `erased` in every case and every structure (the edge no longer
finds the key), and no rebuild, replay or copy of the topics opens it: the sealed blobs stay, the
key is gone (its record leaves the log at the next compaction, within minutes: catalogue
`identity-keys`). The rest of the cases stays.
"""

from __future__ import annotations

from dataclasses import dataclass

from parcours.bus.kafkaio import KafkaAccess, read_latest
from parcours.bus.publisher import Publisher
from parcours.security.identity import DataKey
from parcours.topology.catalogue import Catalogue


@dataclass(frozen=True)
class Erasure:
    case_id: str
    persons: int
    keys: tuple[str, ...]


def keys_to_destroy(case_id: str, activity: list[bytes], keys: dict[str, DataKey]) -> tuple[int, tuple[str, ...]]:
    """From the activity keys (`<key id>/<case_id>`) and the live data keys, the persons of
    `case_id` and every live key of theirs."""
    in_case = {k.decode().split("/", 1)[0] for k in activity if k.decode().split("/", 1)[1:] == [case_id]}
    persons = {keys[k].person for k in in_case if k in keys}
    return len(persons), tuple(sorted(k.key_id for k in keys.values() if k.person in persons))


async def erase_case(catalogue: Catalogue, kafka: KafkaAccess, case_id: str) -> Erasure:
    """Destroy the data keys of the persons of `case_id` (acknowledged by every in-sync replica)."""
    activity_topic, keys_topic = catalogue.topic("person-activity").name, catalogue.topic("identity-keys").name
    latest = await read_latest(kafka, [activity_topic, keys_topic])
    activity = [key for (topic, key) in latest if topic == activity_topic]
    live = {key.decode(): DataKey.decode(key.decode(), value) for (topic, key), value in latest.items() if topic == keys_topic}
    persons, doomed = keys_to_destroy(case_id, activity, live)
    if doomed:
        publisher = Publisher(kafka, catalogue)
        try:
            for key_id in doomed:
                await publisher.send(keys_topic, key_id.encode(), None)
        finally:
            await publisher.close()
    return Erasure(case_id, persons, doomed)
