"""The start time a recorder wrote into a file's own header.

AudioMoth (firmware 1.0.1 on) writes its clock into the WAV comment (LIST/ICMT):
"Recorded at 05:30:00 14/05/2024 (UTC+2) by AudioMoth 24F319055FDF2F5B at ...".
The time is local to the offset it was configured with ("(UTC)", "(UTC+2)",
"(UTC-3:30)"), and its file names follow the same local time, so a name read as UTC
is off by that offset. Comments from before 1.0.1 name no zone and are not used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from animalclap_edge.audio.decode import AudioInfo

# Some firmware writes milliseconds after the seconds ("05:30:00.250"); the file name
# has whole seconds, so they are left off.
_AUDIOMOTH = re.compile(
    r"Recorded at (\d{2}):(\d{2}):(\d{2})(?:\.\d{1,3})? (\d{2})/(\d{2})/(\d{4}) "
    r"\(UTC(?:([+-])(\d{1,2})(?::([0-5]\d))?)?\)"
)


@dataclass(frozen=True)
class HeaderTime:
    local: datetime  # as the recorder wrote it, naive
    offset: timedelta  # local minus UTC
    device: str  # the header's artist, e.g. "AudioMoth 24F319055FDF2F5B"

    @property
    def start_utc(self) -> datetime:
        return (self.local - self.offset).replace(tzinfo=timezone.utc)

    @property
    def zone(self) -> str:
        """As the recorder wrote it: "UTC", "UTC+2", "UTC-3:30"."""
        if not self.offset:
            return "UTC"
        minutes = int(abs(self.offset).total_seconds()) // 60
        sign = "-" if self.offset < timedelta(0) else "+"
        return f"UTC{sign}{minutes // 60}" + (f":{minutes % 60:02d}" if minutes % 60 else "")


def audiomoth_time(comment: str, artist: str = "") -> HeaderTime | None:
    """The time in an AudioMoth header comment; None when it holds none we can read."""
    m = _AUDIOMOTH.search(comment)
    if m is None:
        return None
    hh, mi, ss, dd, mo, yyyy = (int(g) for g in m.groups()[:6])
    try:
        local = datetime(yyyy, mo, dd, hh, mi, ss)
    except ValueError:  # a clock never set can still write digits
        return None
    sign, oh, om = m.group(7, 8, 9)
    offset = timedelta(hours=int(oh or 0), minutes=int(om or 0))
    if offset > timedelta(hours=14):
        return None
    return HeaderTime(local, -offset if sign == "-" else offset, artist.strip())


def header_time(info: AudioInfo) -> HeaderTime | None:
    """The recorder's own start time from a probed file's header, if it wrote one."""
    return audiomoth_time(info.comment, info.artist)
