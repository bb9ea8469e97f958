"""Audio I/O of the runtime: decode and resample files in blocks, cut model windows."""

from animalclap_edge.audio.decode import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    SUPPORTED_EXTENSIONS,
    AudioError,
    AudioInfo,
    probe,
    read_all,
    read_blocks,
    resample,
    to_mono,
)
from animalclap_edge.audio.windows import Window, Windower, repeat_pad

__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "SUPPORTED_EXTENSIONS",
    "AudioError",
    "AudioInfo",
    "Window",
    "Windower",
    "probe",
    "read_all",
    "read_blocks",
    "repeat_pad",
    "resample",
    "to_mono",
]
