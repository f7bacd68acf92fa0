"""`views rebuild` shares the canonical partitions between its worker processes by their records,
and shows its progress against the records of its moment."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parcours.processors.rebuild import share_out

TOPICS = ("p.referrals", "p.messages", "p.consents")


def test_partitions_are_shared_by_records_not_by_number() -> None:
    # partition 0 holds as many records as the five others together: it gets a worker of its own
    ends = {(t, p): (500 if p == 0 else 100) for t in TOPICS for p in range(6)}
    assert share_out(ends, 2) == [[0], [1, 2, 3, 4, 5]]
    # round-robin would have given [0, 2, 4] and [1, 3, 5]: 700 against 300 records per topic


@given(sizes=st.lists(st.integers(0, 10_000), min_size=1, max_size=24), workers=st.integers(1, 8))
def test_every_partition_is_read_by_exactly_one_worker_and_none_is_idle(sizes: list[int], workers: int) -> None:
    ends = {(t, p): n for p, n in enumerate(sizes) for t in TOPICS}
    shares = share_out(ends, workers)
    assert sorted(p for share in shares for p in share) == list(range(len(sizes)))
    assert len(shares) == min(workers, len(sizes))
    assert all(shares)
    # greedy by size: no worker holds more than the fair share plus the largest partition
    loads = [sum(sizes[p] for p in share) for share in shares]
    assert max(loads) <= sum(sizes) / len(shares) + max(sizes)


def test_the_progress_bar_counts_against_the_records_of_the_moment(capsys: pytest.CaptureFixture[str]) -> None:
    from parcours.processors.rebuild import print_progress

    show = print_progress()
    show(250, 1.0, 1000)
    show(500, 1.1, 1000)  # within half a second of the last drawing: not drawn
    show(1000, 2.0, 1000)
    err = capsys.readouterr().err
    assert "[#######-----------------------] 250/1,000 records 250/s" in err
    assert "500/1,000" not in err
    assert "[##############################] 1,000/1,000 records 500/s" in err
