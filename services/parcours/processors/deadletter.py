"""Dead-letter records: the original key, value and headers, plus why and where it failed.

The reason is a short fixed code (a metric label) and a detail text; neither carries the
record's content, so nothing personal leaks into headers or metrics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence


def dead_letter_headers(
    original: Sequence[tuple[str, bytes]] | None,
    *,
    reason: str,
    detail: str,
    service: str,
    topic: str,
    partition: int,
    offset: int,
) -> list[tuple[str, bytes]]:
    return [
        *(original or []),
        ("dl_reason", reason.encode()),
        ("dl_detail", detail[:1000].encode()),
        ("dl_service", service.encode()),
        ("dl_topic", topic.encode()),
        ("dl_partition", str(partition).encode()),
        ("dl_offset", str(offset).encode()),
        ("dl_time_ms", str(int(time.time() * 1000)).encode()),
    ]
