"""WAL segment names as the archive's gap check counts them: timeline, log, segment; consecutive across a log's end."""

import pytest

from bot.backups.archive import next_segment, parse_segment, segment_name, segment_of


def test_the_segment_after_ff_is_the_next_logs_first_with_16_mb_segments():
    assert next_segment("0000000100000000000000FF") == "000000010000000100000000"
    assert next_segment("000000010000000100000000") == "000000010000000100000001"
    assert next_segment("00000002000000AB0000003C") == "00000002000000AB0000003D", "the timeline stays"


def test_numbers_are_consecutive_across_the_boundary_and_names_round_trip():
    before, after = parse_segment("0000000100000000000000FF"), parse_segment("000000010000000100000000")
    assert (before[0], after[0]) == (1, 1) and after[1] == before[1] + 1 == 256
    for name in ("000000010000000000000001", "0000000100000003000000A7", "0000000A0000FFFF000000FF"):
        assert segment_name(*parse_segment(name)) == name


def test_other_segment_sizes_have_other_boundaries():
    mb64 = 64 * 1024 * 1024  # 64 segments per 4 GiB log
    assert next_segment("00000001000000000000003F", mb64) == "000000010000000100000000"
    assert next_segment("0000000100000000000000FF", 1024 * 1024) == "000000010000000000000100", "1 MB: 4096 per log"


def test_a_wal_location_names_its_segment_as_pg_walfile_name_does():
    assert segment_of("0/2000028", 1) == "000000010000000000000002"
    assert segment_of("1/FF000100", 1) == "0000000100000001000000FF"
    assert segment_of("0/FFFFFFFF", 3) == "0000000300000000000000FF"


@pytest.mark.parametrize("name", ["00000001000000000000000", "00000001000000000000000G", "000000010000000000000001.partial", ""])
def test_anything_else_is_not_a_segment_name(name):
    with pytest.raises(ValueError):
        parse_segment(name)
