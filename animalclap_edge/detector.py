"""The detection pipeline, built from the components passed in.

source -> Windower -> backend (batched) -> Scorer -> store (first) -> sinks

Detections are written to the store before any sink sees them: the database is
the product, stdout and the network are views of it. `Detector` is also the
notebook API: `Detector.load().detect_file("x.wav")` or `.detect_array(wave, sr)`.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import numpy as np

from animalclap_edge import __version__
from animalclap_edge.audio.decode import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    AudioError,
    resample,
    to_mono,
)
from animalclap_edge.audio.windows import Window, WindowBatcher, Windower
from animalclap_edge.backends import EmbeddingBackend, checked_embeddings, select_backend
from animalclap_edge.bundle import Bundle, demo_bundle_path, load_bundle
from animalclap_edge.clips import ClipWriter
from animalclap_edge.config import EdgeConfig, config_hash
from animalclap_edge.events import EventMerger
from animalclap_edge.records import (
    OPEN_REASON,
    Detection,
    Event,
    RecordingResult,
    detection_id,
    now_utc_ms,
    utc_ms,
)
from animalclap_edge.retention import Retention
from animalclap_edge.room import is_full, is_want_of_room, make_room
from animalclap_edge.scoring import Scorer, ScoringSettings, WindowScore, WindowScorer
from animalclap_edge.sinks import DetectionSink, GuardedSink
from animalclap_edge.sources import Recording, Skipped, Source
from animalclap_edge.store import RUN_FINISHED, RUN_STOPPED, DetectionStore, StoreError

T = TypeVar("T")

# A recording's row is written when it opens and kept up to date while it is analysed,
# so a live stream cut by a power failure or kill -9 still shows the audio (effort) it
# had: without it a months-long live run left an empty recordings table.
PROGRESS_EVERY_S = 30.0  # wall seconds between updates of an open recording's row
# a float array peaking above this (18 dB over full scale) is integer PCM held as floats
FLOAT_PEAK_LIMIT = 8.0


@dataclass
class RunSummary:
    run_id: str
    recordings: int = 0
    skipped: int = 0
    partial: int = 0
    windows: int = 0
    detections: int = 0
    events: int = 0  # the detections merged (logged, or found logged by an earlier run)
    already_done: int = 0  # recordings this database had finished with this bundle and config
    # detections found that an earlier run had logged (same bundle, recording, window
    # and label): not written again, and kept with that run's id and config
    already_logged: int = 0
    # rows logged before content digests, taken for the files now at their paths
    adopted: int = 0
    # exceptions raised by sinks (each sink's first is warned of and in the health log)
    sink_failures: int = 0
    skipped_reasons: dict[str, str] = field(default_factory=dict)
    # how the run ended, as the runs table says it ("finished", "stopped: ...",
    # "failed: ..."); "" while it runs
    ended: str = ""

    def count(self, result: RecordingResult) -> None:
        """Add a recording's row: finished, or stopped part-way."""
        self.recordings += 1
        self.windows += result.n_windows
        self.detections += result.n_detections
        if result.status != "ok":
            self.skipped += result.status == "skipped"
            self.partial += result.status == "partial"
            self.skipped_reasons[result.source_path] = result.reason or ""


def scoring_settings(cfg: EdgeConfig) -> ScoringSettings:
    s = cfg.scoring
    return ScoringSettings(
        threshold=s.threshold,
        top_k=s.top_k,
        species_thresholds=dict(s.species_thresholds),
        include=tuple(s.include),
        exclude=tuple(s.exclude),
        regions=tuple(s.regions),
        report_only=tuple(s.report_only),
        backoff=s.backoff,
        backoff_threshold=s.backoff_threshold,
    )


class Detector:
    """A bundle's model, scorer, event merging and clip writer under a config: what
    `animalclap-edge run` runs. `Detector.load(bundle, config)` picks a backend (or pass
    one to the constructor); `detect_file`/`detect_array` for a notebook, `run(source,
    store, sinks)` for a stream into a database; `close()` when done."""

    def __init__(
        self,
        bundle: Bundle,
        config: EdgeConfig | None = None,
        backend: EmbeddingBackend | None = None,
        scorer: WindowScorer | None = None,
    ):
        self.bundle = bundle
        self.config = config or EdgeConfig()
        if backend is None:
            b = self.config.backend
            choice = select_backend(
                bundle, b.name, b.threads, b.precision, b.batch_size, b.engine_cache_dir
            )
            backend, self.backend_reason = choice.backend, choice.reason
        else:
            self.backend_reason = f"backend {backend.name} (passed in)"
        self.backend: EmbeddingBackend = backend
        self.scorer: WindowScorer = scorer or Scorer(
            bundle, scoring_settings(self.config), self.config.backend.threads
        )
        st = self.config.storage
        self.clips = None
        if st.save_clips:
            if (
                st.clips_dir is None
            ):  # the config's validator refuses it; an EdgeConfig built by hand
                raise ValueError("storage.save_clips needs storage.clips_dir")
            self.clips = ClipWriter(st.clips_dir, bundle.manifest.sample_rate, st.max_disk_percent)
        self.retention = Retention.from_config(self.config)  # None: it could delete nothing
        self.config_hash = config_hash(self.config)
        m = bundle.manifest
        self.sample_rate = m.sample_rate
        self._closed = False
        self.window = m.window_samples
        self.hop = round(self.config.audio.hop_s * m.sample_rate)
        self.min_samples = round(self.config.audio.min_clip_s * m.sample_rate)
        if round(self.config.audio.window_s * m.sample_rate) != self.window:
            # The graph's window is fixed at export; the config cannot change it.
            self.window_note = f"audio.window_s={self.config.audio.window_s} ignored: bundle window is {m.window_seconds:g} s"
        else:
            self.window_note = ""
        self.last_summary: RunSummary | None = None  # of the latest `run`, as far as it got
        self.progress_every_s = PROGRESS_EVERY_S

    @classmethod
    def load(
        cls,
        bundle: str | Path | None = None,
        config: EdgeConfig | str | Path | None = None,
        *,
        warn_notice: bool = True,
        backend: Callable[[Bundle], EmbeddingBackend] | None = None,
    ) -> Detector:
        """Load a bundle (default: the packaged demo bundle) and pick a backend; `config`
        is an `EdgeConfig` or the path of a YAML config. A bundle's notice (a demo
        bundle is not a field model) is given as a `UserWarning` (`run` prints it
        itself, with `warn_notice=False`). `backend`: makes your own backend for the
        loaded bundle instead of the config's choice (`lambda b: MyBackend(b)`); to put
        your own scorer in, set `.scorer` (it may wrap the one there)."""
        import warnings

        if isinstance(config, (str, Path)):
            from animalclap_edge.config import load_config

            config = load_config(config)
        loaded = load_bundle(bundle if bundle is not None else demo_bundle_path())
        if warn_notice and loaded.manifest.notice:
            warnings.warn(f"{loaded.manifest.notice}", UserWarning, stacklevel=2)
        return cls(loaded, config, backend=backend(loaded) if backend else None)

    # -- notebook API ---------------------------------------------------------

    def detect_array(
        self, wave: np.ndarray, sample_rate: int, name: str = "array"
    ) -> list[Detection]:
        """Detections for an in-memory clip (mono or (n, channels)) at any supported rate.

        Floats are taken as they are (full scale +-1); signed integers (int16 from
        `scipy.io.wavfile`, say) are scaled to +-1 as soundfile scales them."""
        self._check_open()
        if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
            raise AudioError(
                f"sample_rate {sample_rate} Hz outside the supported "
                f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
            )
        wave = np.asarray(wave)
        x = to_mono(_as_float(wave))
        peak = _peak(x)
        if not math.isfinite(peak):
            raise AudioError("non-finite samples (NaN/Inf) in the array")
        if np.issubdtype(wave.dtype, np.floating) and peak > FLOAT_PEAK_LIMIT:
            raise AudioError(
                f"float samples peak at {peak:.4g}, far above full scale (1.0): floats are "
                "read as +-1 full scale; divide integer PCM held as floats by 32768 (int16) "
                "or 2**31 (int32), or pass the integer array itself"
            )
        if sample_rate != self.sample_rate:
            x = resample(x, sample_rate, self.sample_rate)
        rec = Recording(
            id=name,
            sample_rate=self.sample_rate,
            start_time=None,
            clock_trusted=False,
            clock_note="array: no wall clock",
            blocks=iter([x]),
        )
        dets: list[Detection] = []
        result = self._process_recording(rec, run_id="notebook", store=None, sinks=[], out=dets)
        _say_status(result)
        return dets

    @overload
    def detect_file(self, path: str | Path, events: Literal[False] = False) -> list[Detection]: ...

    @overload
    def detect_file(self, path: str | Path, events: Literal[True]) -> list[Event]: ...

    def detect_file(self, path: str | Path, events: bool = False) -> list[Detection] | list[Event]:
        """Window detections of a file, or (events=True) the events merged from them."""
        self._check_open()
        from animalclap_edge.sources import FileSource

        dets: list[Detection] = []
        evs: list[Event] = []
        zone = self.config.device.file_time_zone  # names without an offset: read in it
        with FileSource(path, self.sample_rate, file_time_zone=zone) as src:
            for rec in src.recordings():
                if isinstance(rec, Skipped):  # a reason that names the path says it once
                    raise AudioError(
                        rec.reason if rec.id in rec.reason else f"{rec.id}: {rec.reason}"
                    )
                result = self._process_recording(
                    rec, "notebook", None, [], out=dets, out_events=evs
                )
                _say_status(result)
        return evs if events else dets

    # -- streaming run --------------------------------------------------------

    def run(
        self,
        source: Source,
        store: DetectionStore,
        sinks: Iterable[DetectionSink] = (),
        redo: bool = False,
    ) -> RunSummary:
        """Process every recording of `source`; every file ends up in `store.recordings`.

        A recording this database already finished with the same bundle and config is
        passed over (unless `redo`), so a run killed half-way through a card of files
        picks up where it stopped instead of starting again."""
        self._check_open()
        run_id = uuid.uuid4().hex
        summary = self.last_summary = RunSummary(run_id=run_id)  # read if interrupted
        failed: set[str] = set()

        def sink_failed(name: str, e: Exception) -> None:
            # a webhook down, a closed pipe: the database holds it all; said once a sink
            summary.sink_failures += 1
            if name not in failed:
                failed.add(name)
                why = f"{type(e).__name__}: {e}"
                warnings.warn(f"sink {name} failed ({why}); the run goes on", stacklevel=2)
                # StoreError: a store closed under a sink told of the run's end
                with contextlib.suppress(sqlite3.Error, StoreError):
                    store.add_health("sink_failed", name, {"why": why[:500]})

        guarded = [GuardedSink(s, sink_failed) for s in sinks]
        store.start_run(
            run_id,
            self.bundle.id,
            self.config_hash,
            getattr(source, "name", type(source).__name__),
            __version__,
            device=self.config.device.name,
            site=self.config.device.site,
        )
        try:
            if self.retention is not None:
                self.retention.maybe_apply(store, start=True)
            for rec in source.recordings():
                rec = self._identified(rec, store, summary)
                if (
                    not redo
                    and not isinstance(rec, Skipped)
                    and store.recording_done(rec.id, self.bundle.id, self.config_hash)
                ):
                    summary.already_done += 1
                    continue
                if isinstance(rec, Skipped):
                    result = RecordingResult(
                        recording_id=rec.id,
                        run_id=run_id,
                        source_path=rec.source_path,
                        status="skipped",
                        reason=rec.reason,
                        duration_s=0.0,
                        n_windows=0,
                        n_detections=0,
                        start_time_utc=None,
                        clock_trusted=False,
                        clock_note="",
                        finished_utc=now_utc_ms(),
                    )
                else:
                    result = self._process_recording(rec, run_id, store, guarded, out=None)
                self._with_room(store, store.record_recording, result)
                summary.count(result)
                for g in guarded:
                    g.on_recording(result)
            ended = RUN_FINISHED
        except KeyboardInterrupt:
            ended = RUN_STOPPED
            raise
        except BaseException as e:  # said in the runs table; the caller reports it
            ended = f"failed: {type(e).__name__}: {' '.join(str(e).split())}"[:500]
            raise
        finally:
            summary.ended = ended
            try:
                store.finish_run(run_id, ended)
            finally:  # a sink that buffers (a file, a batch for a webhook) flushes now
                for g in guarded:
                    g.on_run_end(summary)
        return summary

    @staticmethod
    def _identified(
        rec: Recording | Skipped, store: DetectionStore, summary: RunSummary
    ) -> Recording | Skipped:
        """`rec` under the id this database knows it by (`store.recording_id_for`). A
        file that cannot be read now does not replace the row of one analysed before at
        its path (a legacy id, or its card damaged since): it is logged beside it."""
        if isinstance(rec, Skipped):
            return replace(rec, id=f"{rec.id}#unread") if store.analysed(rec.id) else rec
        rid, adopted = store.recording_id_for(rec.id, rec.digest)
        summary.adopted += adopted
        return replace(rec, id=rid)

    def _with_room(self, store: DetectionStore, write: Callable[[Any], T], rows: Any) -> T:
        """`write(rows)`; where the card is full, clip audio gives way (room.make_room,
        logged as a health event) and it is tried once more: detections before clips."""
        try:
            return write(rows)
        except sqlite3.Error as e:  # a constraint or a lock is no want of room
            folder = self.clips.folder if self.clips is not None else None
            if not (is_want_of_room(e) and is_full(store.path.parent)):
                raise
            if (room := make_room(folder)) is None:
                raise
        store.add_health("disk_full", str(store.path), room.detail())
        done = write(rows)
        store.forget_clips(room.paths, room.note())  # after: the rows come first
        return done

    def _process_recording(
        self,
        rec: Recording,
        run_id: str,
        store,
        sinks,
        out: list | None,
        out_events: list | None = None,
    ) -> RecordingResult:
        windower = Windower(self.window, self.hop, self.min_samples)
        batcher = WindowBatcher(windower, self.config.backend.batch_size)
        merger = EventMerger(self.config.scoring.merge_gap_s)
        best: dict[tuple[str, str], tuple[float, np.ndarray | None]] = {}
        n_windows = n_dets = 0
        status, reason = "ok", None
        saved_at = time.monotonic()

        def row(status: str, reason: str | None) -> RecordingResult:
            return RecordingResult(
                recording_id=rec.id,
                run_id=run_id,
                source_path=rec.source_path,
                status=status,
                reason=reason,
                duration_s=windower.samples_seen / self.sample_rate,
                n_windows=n_windows,
                n_detections=n_dets,
                start_time_utc=utc_ms(rec.start_time) if rec.start_time else None,
                clock_trusted=rec.clock_trusted,
                clock_note=rec.clock_note,
                finished_utc=now_utc_ms(),
                audio_note=rec.audio_note,
                content_digest=rec.digest,
            )

        if rec.sample_rate != self.sample_rate:  # a source of one's own: numbers, not errors
            return row(
                "skipped",
                f"its blocks are at {rec.sample_rate} Hz and the model takes "
                f"{self.sample_rate} Hz: a source resamples to the detector's sample_rate",
            )

        def save_open(now: bool = False) -> None:
            nonlocal saved_at
            if store is None or not (now or time.monotonic() - saved_at >= self.progress_every_s):
                return
            self._with_room(store, store.record_recording, row("partial", OPEN_REASON))
            saved_at = time.monotonic()

        dim = self.bundle.manifest.embedding_dim

        def process(batches: Iterable[tuple[np.ndarray, list[Window]]]) -> None:
            nonlocal n_windows, n_dets
            for x, chunk in batches:  # x (n, window): the batcher's buffer, reused
                emb = checked_embeddings(self.backend.name, self.backend.embed(x), len(x), dim)
                scores = self.scorer.score(emb)
                per_window = [
                    (w, self._detections(rec, run_id, w, s))
                    for w, s in zip(chunk, scores, strict=True)
                ]
                dets = [d for _, ds in per_window for d in ds]
                events = []
                for w, ds in per_window:
                    events += [clip(e) for e in merger.push(w.start_sample / self.sample_rate, ds)]
                    if self.clips is not None:
                        for d in ds:  # the best window of each open event, kept for its clip
                            key = (d.level, d.taxon)
                            if d.probability > best.get(key, (-1.0, None))[0]:
                                best[key] = (d.probability, w.samples.copy())
                n_windows += len(chunk)
                if store is not None and dets:
                    new = self._with_room(store, store.add_detections, dets)  # durable first
                    # found again (another config, --redo): the earlier row stays as it is
                    if self.last_summary is not None:  # None outside `run` (bench)
                        self.last_summary.already_logged += len(dets) - new
                if store is not None and self.retention is not None:
                    # the clock only: the disk is checked before each clip write
                    self.retention.maybe_apply(store, check_disk=False)
                n_dets += len(dets)
                for d in dets:
                    for s in sinks:
                        s.on_detection(d)
                if out is not None:
                    out.extend(dets)
                emit(events)

        def clip(e: Event) -> Event:
            if self.clips is None:
                return e
            _, samples = best.pop((e.level, e.taxon), (0.0, None))
            if samples is None:
                return e
            if store is not None and self.retention is not None:
                # Makes room first when the disk is above max_disk_percent, so the write
                # below is refused only when retention could free nothing.
                self.retention.maybe_apply(store)
            path, note = self.clips.write(e, samples)
            return replace(e, clip_path=path, clip_note=note)

        def emit(events: list[Event]) -> None:
            if store is not None and events:
                self._with_room(store, store.add_events, events)
            for e in events:
                for s in sinks:
                    s.on_event(e)
            if out_events is not None:
                out_events.extend(events)
            if self.last_summary is not None:  # None outside `run` (bench)
                self.last_summary.events += len(events)

        # A stream's row from its start; a file's only once it takes progress_every_s (a
        # card of short files would write every row twice, and a file can be read again)
        save_open(now=not rec.replayable)
        stopped: KeyboardInterrupt | None = None
        try:
            try:
                for block in rec.blocks:
                    process(batcher.push(_float_mono(block)))
                    if not rec.replayable:
                        # live audio: a window goes to the model, the database and a
                        # live view once a block completes it; waiting for batch_size
                        # of them lagged every detection by up to batch_size x hop
                        # (12 s at the default 8). A block holding several windows
                        # (a backlog) still goes as one batch.
                        process(batcher.ready())
                    save_open()  # a file's batch may take many blocks to fill
            except AudioError as e:
                status, reason = "partial", str(e)
            except KeyboardInterrupt as e:
                stopped = e
            if stopped is None or not rec.replayable:
                # windows waiting for a full batch: up to batch_size x hop of live audio.
                # A stopped file is not flushed: its next run reads it again, and events
                # closed at the stop would keep their id and stand for the whole ones.
                process(batcher.flush())
                emit([clip(e) for e in merger.flush()])
        except BaseException as e:
            self._save_stopped(store, row, e, rec.replayable)
            raise
        if stopped is not None:
            self._save_stopped(store, row, stopped, rec.replayable)
            raise stopped
        seen_s = windower.samples_seen / self.sample_rate
        if n_windows == 0 and status == "ok":
            status = "skipped"
            reason = (
                f"too short ({seen_s:.2f} s < audio.min_clip_s {self.config.audio.min_clip_s:g} s)"
            )
        elif n_windows == 0:
            status = "skipped"
        return row(status, reason)

    def _save_stopped(
        self,
        store: DetectionStore | None,
        row: Callable[[str, str | None], RecordingResult],
        e: BaseException,
        replayable: bool,
    ) -> None:
        """The row of a recording stopped or failed part-way: how far it got, and why;
        counted in the run's summary, which `run` prints when stopped."""
        if store is None:
            return
        why = (
            "the process was stopped (Ctrl-C or SIGTERM)"
            if isinstance(e, KeyboardInterrupt)
            else f"{type(e).__name__}: {e}"
        )
        again = "; the next run analyses it again from its start" if replayable else ""
        result = row("partial", None)
        result = replace(result, reason=f"stopped after {result.duration_s:.1f} s: {why}{again}")
        with contextlib.suppress(Exception):  # the card may be what failed
            store.record_recording(result)
        if self.last_summary is not None:
            self.last_summary.count(result)

    def _detections(
        self, rec: Recording, run_id: str, w: Window, s: WindowScore
    ) -> list[Detection]:
        t0 = w.start_sample / self.sample_rate
        # a clip shorter than a window ends where its audio does, not where its padding does
        t1 = t0 + (w.length or self.window) / self.sample_rate
        start = utc_ms(rec.start_time + timedelta(seconds=t0)) if rec.start_time else None
        return [
            Detection(
                detection_id=detection_id(
                    self.bundle.id, rec.id, w.start_sample, lab.level, lab.taxon
                ),
                run_id=run_id,
                recording_id=rec.id,
                window_start_s=t0,
                window_end_s=t1,
                start_time_utc=start,
                clock_trusted=rec.clock_trusted,
                bundle_id=self.bundle.id,
                config_hash=self.config_hash,
                rank=rank,
                level=lab.level,
                taxon=lab.taxon,
                scientific_name=lab.scientific_name,
                common_name=lab.common_name,
                score=round(lab.score, 4),
                probability=round(lab.probability, 4),
                traits_json=_json(s.traits),
                created_utc=now_utc_ms(),
            )
            for rank, lab in enumerate(s.labels)
        ]

    def close(self) -> None:
        """Release the backend (its session, engine or GPU memory); a second call does nothing."""
        if not self._closed:
            self._closed = True
            self.backend.close()

    def _check_open(self) -> None:
        if self._closed:  # the backend's session is gone: AttributeError on None said it
            raise RuntimeError("this Detector was closed: load another (Detector.load)")


def _float_mono(block: np.ndarray) -> np.ndarray:
    """`block` if it holds float mono samples; AudioError naming what a source gave
    instead. int16 PCM taken as floats was scored as a sound 32,767 times too loud."""
    if not isinstance(block, np.ndarray) or block.dtype.kind != "f" or block.ndim != 1:
        what = f"{block.dtype} {block.shape}" if isinstance(block, np.ndarray) else type(block)
        raise AudioError(
            f"a block of {what}: a source yields 1-D float32 mono blocks in [-1, 1] "
            "(int16 PCM: divide by 32768)"
        )
    return block


def _json(obj) -> str:
    import json

    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _peak(x: np.ndarray, step: int = 1 << 20) -> float:
    """max |x|, a slice at a time (a whole-array temporary is 4 bytes per sample); NaN
    or inf where a sample is not finite (numpy's max propagates both within a slice;
    Python's would drop a NaN slice after a finite one)."""
    peak = 0.0
    for i in range(0, len(x), step):
        top = float(np.abs(x[i : i + step]).max())
        if not math.isfinite(top):
            return top
        peak = max(peak, top)
    return peak


def _say_status(result: RecordingResult) -> None:
    """What `run` would log as skipped (AudioError) or partial (a warning), said to a
    notebook caller too: an array too short for one window returned [] in silence."""
    if result.status == "skipped":
        raise AudioError(f"{result.recording_id}: {result.reason}")
    if result.status == "partial":
        warnings.warn(
            f"{result.recording_id}: partial ({result.reason}); detections up to it are returned",
            UserWarning,
            stacklevel=3,
        )


def _as_float(x: np.ndarray) -> np.ndarray:
    """float32 samples at full scale +-1: floats as given, signed integers scaled by
    their range (int16 / 32768), anything else refused."""
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    if np.issubdtype(x.dtype, np.signedinteger):
        return x.astype(np.float32) / np.float32(2 ** (8 * x.dtype.itemsize - 1))
    raise AudioError(
        f"samples of dtype {x.dtype}: give float samples in [-1, 1] or signed integer PCM"
    )
