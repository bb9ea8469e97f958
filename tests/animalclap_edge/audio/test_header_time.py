"""AudioMoth header times: the zone it was set to, applied; files without one, left be."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import soundfile as sf

from animalclap_edge.audio.decode import probe
from animalclap_edge.audio.header_time import audiomoth_time, header_time
from animalclap_edge.sources import FileSource

# As firmware 1.8 writes it (metamoth's documented format), with zones as configured.
COMMENT = (
    "Recorded at 05:30:00 14/05/2024 ({zone}) by AudioMoth 24F319055FDF2F5B at medium gain "
    "while battery was 4.2V and temperature was 15.2C."
)


@pytest.mark.parametrize(
    ("zone", "utc"),
    [
        ("UTC", datetime(2024, 5, 14, 5, 30)),
        ("UTC+2", datetime(2024, 5, 14, 3, 30)),
        ("UTC-3:30", datetime(2024, 5, 14, 9, 0)),
        ("UTC+12", datetime(2024, 5, 13, 17, 30)),
        ("UTC+5:45", datetime(2024, 5, 13, 23, 45)),
    ],
)
def test_an_audiomoth_comment_gives_utc_with_its_zone_applied(zone, utc):
    h = audiomoth_time(COMMENT.format(zone=zone), "AudioMoth 24F319055FDF2F5B")
    assert h is not None and h.start_utc == utc.replace(tzinfo=timezone.utc)
    assert h.zone == zone and h.device == "AudioMoth 24F319055FDF2F5B"
    with_ms = audiomoth_time(COMMENT.format(zone=zone).replace("05:30:00", "05:30:00.250"))
    assert with_ms is not None and with_ms.start_utc == h.start_utc  # names have whole s


@pytest.mark.parametrize(
    "comment",
    [
        # firmware 1.0: no zone, so the file name's reading stands
        "Recorded at 05:30:00 14/05/2024 by AudioMoth 24F319055FDF2F5B at gain setting 2",
        "Recorded at 05:30:00 31/02/2024 (UTC) by AudioMoth 24F319055FDF2F5B",  # no date
        "Recorded at 05:30:00 14/05/2024 (UTC+15) by AudioMoth 24F319055FDF2F5B",
        "Recorded at 05:30:00 14/05/2024 (UTC+5:99) by AudioMoth 24F319055FDF2F5B",
        "field notes: dawn chorus",
        "",
    ],
)
def test_comments_without_a_time_and_zone_give_none(comment):
    assert audiomoth_time(comment) is None


def _wav(path, comment: str | None, seconds: float = 1.0) -> None:
    with sf.SoundFile(path, "w", 48000, 1, "PCM_16") as f:
        if comment is not None:
            f.comment, f.artist = comment, "AudioMoth 24F319055FDF2F5B"
        noise = np.random.default_rng(0).normal(0, 3000, int(48000 * seconds))
        f.write(noise.astype(np.int16))


def test_a_local_time_audiomoth_file_is_dated_in_utc_and_says_why(tmp_path):
    """AudioMoth set to UTC+2 names its files in local time: read as UTC they were two
    hours late (an ecologist's card in the walkthrough)."""
    p = tmp_path / "20240514_053000.WAV"
    _wav(p, COMMENT.format(zone="UTC+2"))
    (rec,) = FileSource(p, 48000).recordings()
    assert rec.start_time == datetime(2024, 5, 14, 3, 30, tzinfo=timezone.utc)
    assert rec.clock_trusted
    assert rec.clock_note == (
        "time from the recorder's header (UTC+2 applied; AudioMoth 24F319055FDF2F5B)"
    )
    # A part cut from the file (ffmpeg's segment muxer copies the comment) keeps the
    # first part's header: its name's time stands, read in the header's zone.
    part = tmp_path / "site3_20240514_080000.WAV"
    p.rename(part)
    (rec,) = FileSource(part, 48000).recordings()
    assert rec.start_time == datetime(2024, 5, 14, 6, 0, tzinfo=timezone.utc)
    assert rec.clock_note == (
        "time from file name (the header's UTC+2 applied); its header says 2024-05-14 "
        "05:30:00 UTC+2; AudioMoth 24F319055FDF2F5B"
    )
    own = tmp_path / "site3_20240514_080000+0100.WAV"  # a name with its own offset: as is
    part.rename(own)
    (rec,) = FileSource(own, 48000).recordings()
    assert rec.start_time == datetime(2024, 5, 14, 7, 0, tzinfo=timezone.utc)


def test_a_file_without_a_recorder_header_keeps_its_name_time(tmp_path):
    p = tmp_path / "20240514_053000.wav"
    _wav(p, None)
    assert header_time(probe(p)) is None
    (rec,) = FileSource(p, 48000).recordings()
    assert rec.start_time == datetime(2024, 5, 14, 5, 30, tzinfo=timezone.utc)
    assert rec.clock_note == "time from file name (read as UTC)"
    _wav(p, "field notes: dawn chorus")
    (rec,) = FileSource(p, 48000).recordings()
    assert rec.start_time - datetime(2024, 5, 14, 5, 30, tzinfo=timezone.utc) == timedelta(0)
