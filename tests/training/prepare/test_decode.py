"""Fetching and decoding one source recording."""

import functools
import http.server
import io
import threading

import numpy as np
import pytest
import soundfile as sf

from training.prepare import decode as d

SR = 44_100


def _wav_bytes(seconds=2.0) -> bytes:
    t = np.arange(int(seconds * SR)) / SR
    buf = io.BytesIO()
    sf.write(buf, 0.2 * np.sin(2 * np.pi * 1000 * t), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class _CutShort(http.server.BaseHTTPRequestHandler):
    """Promises the whole file, sends half of it on the first `cuts` requests (a
    connection dropped mid-download), then the whole file."""

    def __init__(self, *args, state, **kw):
        self.state = state
        super().__init__(*args, **kw)

    def log_message(self, *args):
        pass

    def do_GET(self):
        data = self.state["data"]
        self.state["requests"] += 1
        cut = self.state["requests"] <= self.state["cuts"]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2] if cut else data)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def cut_server():
    state = {"data": _wav_bytes(), "requests": 0, "cuts": 1}
    handler = functools.partial(_CutShort, state=state)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/rec.wav", state
    finally:
        server.shutdown()
        server.server_close()


FAST = d.DecodeSettings(timeout_s=5, retries=3)


def test_a_download_cut_short_is_retried_not_kept_as_a_broken_recording(cut_server, monkeypatch):
    monkeypatch.setattr(d.time, "sleep", lambda s: None)
    url, state = cut_server
    wave = d.load_source(url, FAST)
    assert state["requests"] == 2
    assert len(wave) == pytest.approx(2.0 * d.SAMPLE_RATE, abs=2)


def test_a_download_always_cut_short_is_a_failed_download(cut_server, monkeypatch):
    monkeypatch.setattr(d.time, "sleep", lambda s: None)
    url, state = cut_server
    state["cuts"] = 99
    with pytest.raises(d.Rejected) as e:
        d.load_source(url, FAST)
    # the source file is fine: the report must not call it broken
    assert e.value.reason == d.DOWNLOAD, e.value
    assert "of" in e.value.detail and state["requests"] == 3
