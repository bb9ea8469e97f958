"""Fetching and decoding one source recording."""

import functools
import http.server
import io
import threading
import time

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
    with d.load_source(url, FAST) as audio:
        assert state["requests"] == 2
        assert audio.samples == pytest.approx(2.0 * d.SAMPLE_RATE, abs=2)


def test_a_download_always_cut_short_is_a_failed_download(cut_server, monkeypatch):
    monkeypatch.setattr(d.time, "sleep", lambda s: None)
    url, state = cut_server
    state["cuts"] = 99
    with pytest.raises(d.Rejected) as e:
        d.load_source(url, FAST)
    # the source file is fine: the report must not call it broken
    assert e.value.reason == d.DOWNLOAD, e.value
    assert "of" in e.value.detail and state["requests"] == 3


def _stereo_m4a(path, left, right, rate=SR):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="stereo")
        planes = np.ascontiguousarray(np.stack([left, right]).astype(np.float32))
        frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout="stereo")
        frame.rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_a_stereo_file_read_by_pyav_is_mixed_to_mono_as_libsndfile_mixes_it(tmp_path):
    """FFmpeg's stereo-to-mono downmix gives each channel 0.707: a phone's stereo M4A came
    out 3 dB louder than the same audio as WAV, and a loud one clipped in the shard."""
    t = np.arange(2 * SR) / SR
    tone = 0.9 * np.sin(2 * np.pi * 440 * t)
    _stereo_m4a(tmp_path / "phone.m4a", tone, tone)
    sf.write(tmp_path / "phone.wav", np.stack([tone, tone], 1), SR, subtype="FLOAT")
    with d.load_source(str(tmp_path / "phone.m4a"), d.DecodeSettings()) as audio:
        m4a = audio.read()
    with d.load_source(str(tmp_path / "phone.wav"), d.DecodeSettings()) as audio:
        wav = audio.read()
    assert np.abs(m4a).max() == pytest.approx(np.abs(wav).max(), rel=0.05)
    assert np.abs(m4a).max() < 1.0  # nothing the shard's 16 bits would clip


def test_a_float_recording_past_full_scale_is_scaled_not_clipped_in_the_shard(tmp_path):
    """A 32-bit float WAV may hold samples past +-1 (gain applied in an editor): the
    shard's 16-bit rounding cut them off, flattening the loudest calls."""
    from training.prepare.shards import decode_audio, encode_audio

    t = np.arange(2 * SR) / SR
    loud = 2.5 * np.sin(2 * np.pi * 440 * t) * np.hanning(len(t))
    sf.write(tmp_path / "loud.wav", loud, SR, subtype="FLOAT")
    with d.load_source(str(tmp_path / "loud.wav"), d.DecodeSettings()) as audio:
        stored = decode_audio(encode_audio(audio.read()))
    assert np.abs(stored).max() > 0.9
    # the shape is kept: no run of samples stuck at full scale
    assert np.count_nonzero(np.abs(stored) >= 32767 / 32768) < 10  # clipped: 33240


_SLEEP = time.sleep


class _Trickle(http.server.BaseHTTPRequestHandler):
    """A server that answers, then sends a byte now and then: never silent for the
    socket timeout, never done."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(400):
                self.wfile.write(b"R")
                self.wfile.flush()
                _SLEEP(0.1)  # time.sleep itself is patched: no waits between retries
        except OSError:  # the client gave up
            pass


def test_a_download_that_trickles_is_given_up_not_waited_on_forever(monkeypatch):
    monkeypatch.setattr(d.time, "sleep", lambda s: None)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/slow.wav"
    result = {}

    def get():
        try:
            d.load_source(url, d.DecodeSettings(timeout_s=1, retries=2))
        except d.Rejected as e:
            result["rejected"] = e

    try:
        t = threading.Thread(target=get, daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), "the download hung"
        assert result["rejected"].reason == d.DOWNLOAD
        assert "stalled" in result["rejected"].detail
    finally:
        server.shutdown()
        server.server_close()


def test_a_host_that_never_answers_is_given_up_after_a_few_rows(monkeypatch):
    """Every row of a host that accepts connections and never answers (or drops them)
    took its full timeout on each try: a minute times three per row, a week of workers'
    time for 100,000 rows of one dead mirror. After a few rows in a row fail so, that
    host's next rows fail at once (for a while), said so; others are untouched."""
    import socket

    monkeypatch.setattr(d.time, "sleep", lambda s: None)
    d._HOSTS.clear()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead.listen(64)  # connections queue, and nothing ever answers
    host = f"127.0.0.1:{dead.getsockname()[1]}"
    fast = d.DecodeSettings(timeout_s=0.3, retries=2)
    took = []
    try:
        for i in range(6):
            start = time.monotonic()
            with pytest.raises(d.Rejected) as e:
                d.load_source(f"http://{host}/{i}.wav", fast)
            took.append(time.monotonic() - start)
            assert e.value.reason == d.DOWNLOAD
    finally:
        dead.close()
    assert min(took[: d.HOST_GIVE_UP_AFTER]) >= 0.5  # tried, timing out twice
    assert max(took[d.HOST_GIVE_UP_AFTER :]) < 0.1  # not tried
    assert "not tried" in str(e.value) and host in str(e.value)
    # a URL of another host is still tried (refused at once here)
    with pytest.raises(d.Rejected) as e:
        d.load_source("http://127.0.0.1:9/x.wav", fast)
    assert "not tried" not in str(e.value)
    d._HOSTS.clear()


def test_a_file_url_is_read_in_place_and_a_missing_one_is_missing(tmp_path):
    """A missing file:// recording was fetched three times with back-off and counted as
    a failed download, which --retry-downloads then tried again on every rerun."""
    wav = tmp_path / "a b.wav"  # a space: percent-encoded in the URL
    wav.write_bytes(b"RIFF")
    work = tmp_path / "work"
    work.mkdir()
    assert d.fetch(wav.as_uri(), work, d.DecodeSettings()) == wav
    assert not list(work.iterdir())  # not copied
    with pytest.raises(d.Rejected) as e:
        d.fetch((tmp_path / "gone.wav").as_uri(), work, d.DecodeSettings(retries=3))
    assert e.value.reason == d.MISSING and e.value.detail == "no such file"
