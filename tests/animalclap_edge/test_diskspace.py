"""Disk fullness as `df` counts it: the root-reserved blocks are not the recorder's."""

from collections import namedtuple

import pytest

from animalclap_edge.diskspace import percent_full, usage_percent

Usage = namedtuple("Usage", "total used free")


def test_reserved_blocks_count_as_full_for_the_recorder():
    # 100 GB card, 5 GB reserved for root, 90 GB used: 5 GB left for an ordinary user
    card = Usage(total=100, used=90, free=5)
    assert usage_percent(card) == pytest.approx(94.74, abs=0.01)  # df's Use%
    # (used / total, the old formula, said 90% here)
    assert usage_percent(Usage(total=100, used=95, free=0)) == 100.0  # ENOSPC for the user
    assert usage_percent(Usage(total=0, used=0, free=0)) == 100.0  # nothing to write to


def test_a_real_filesystem_is_between_empty_and_full(tmp_path):
    assert 0 < percent_full(tmp_path) < 100
