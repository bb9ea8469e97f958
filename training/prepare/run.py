"""`animalclap-train prepare`: manifest -> licensed, decoded, 48 kHz shards + splits.

Work is cut into shards of `per_shard` recordings, in key order, so which shard a
recording lands in depends only on the manifest and catalogue. A machine given
`--shard i/N` does the shards j with j % N == i; any number of machines can share
one output folder (a shared file system). Finished shards are skipped, so a killed
run resumes. When every shard is there, the last machine (or `--finalize`) merges
the indexes into `records.jsonl`, the report and the zero-shot split.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import (
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import asdict, dataclass, field
from pathlib import Path

from animalclap_edge.contracts.catalogue import Catalogue
from training.atomic import dead_temporaries, write_whole, writer_tag
from training.prepare.decode import CRASHED, DOWNLOAD, DecodeSettings, Rejected, load_source
from training.prepare.manifest import (
    DUPLICATE,
    LOW_QUALITY,
    MALFORMED,
    NO_LOCATION,
    NOT_CC,
    UNKNOWN_SPECIES,
    UNSUPPORTED_URL,
    URL_SCHEMES,
    Plan,
    SourceRecording,
    background_reader,
    background_unmatched,
    plan,
    unmatched_note,
)
from training.prepare.shards import (
    CODECS,
    ShardWriter,
    read_index,
    shard_complete,
    shard_name,
    stale_temporaries,
)

PREPARED = "prepared.json"
PLAN = "plan.json"


def usable_cpus() -> int:
    """The cores this process may run on: a scheduler's share (Slurm, taskset, a cgroup
    cpuset), not the node's count, which started a worker per node core on them."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@dataclass
class PrepareConfig:
    manifest: str
    catalogue: str
    out: str
    traits: str | None = None
    per_shard: int = 500  # ~1-2 GB of 48 kHz FLAC for xeno-canto-length recordings
    shard: str = "0/1"  # "i/N": this machine's share of the shards
    workers: int = field(default_factory=usable_cpus)
    qualities: list[str] | None = None  # accepted quality grades; None = all
    settings: DecodeSettings = field(default_factory=DecodeSettings)
    seed: int = 0  # of the zero-shot split
    codec: str = "flac"  # or "wav": about twice the disk, no decoding in the loader
    # redo written shards whose downloads failed (not for a 4xx): the server may be back
    retry_downloads: bool = False
    # a recording a worker spends longer on (a decoder stuck on a pathological file, a
    # hung network mount) has its process stopped and is left out; 0: wait for ever
    record_timeout_s: float = 3600.0


def parse_shard(spec: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: write it as i/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {spec!r}: need 0 <= i < N")
    return i, n


# Where to look when a reason leaves every row out.
_LOOK_AT = {
    NOT_CC: "the licence column (only Creative Commons licences are kept)",
    UNKNOWN_SPECIES: "the species_id column against the catalogue's ids and names",
    LOW_QUALITY: "the quality column against --quality",
    NO_LOCATION: "the path or url column",
    DUPLICATE: "the id column",
    MALFORMED: "the CSV's quoting (a cell holding a comma must be in double quotes)",
    UNSUPPORTED_URL: f"the path or url column (URLs are fetched by {', '.join(URL_SCHEMES)}: "
    "mount the bucket and give paths, or give signed https URLs)",
}


def prepare(cfg: PrepareConfig, progress: bool = True) -> dict:
    """Write this machine's shards; finalize when all shards are present. Returns a
    summary: shards done here, shards present, and the report when finalized."""
    i, n = parse_shard(cfg.shard)
    if cfg.per_shard < 1 or cfg.workers < 1:
        raise ValueError("--per-shard and --workers must be at least 1")
    if not cfg.record_timeout_s >= 0:  # NaN too
        raise ValueError(
            f"--record-timeout {cfg.record_timeout_s}: give seconds, or 0 to wait for ever"
        )
    if cfg.codec not in CODECS:
        raise ValueError(f"--codec {cfg.codec!r}: use one of {sorted(CODECS)}")
    out = Path(cfg.out)
    catalogue = Catalogue.from_csv(cfg.catalogue)
    p = plan(cfg.manifest, catalogue, cfg.qualities)
    if not p.keep:
        raise ValueError(
            f"manifest {cfg.manifest}: no row left to prepare ({dict(p.left_out)}); "
            f"check {' and '.join(_LOOK_AT[r] for r, _ in p.left_out.most_common() if r in _LOOK_AT)}"
        )
    if note := unmatched_note(p.background_unknown):  # before hours of decoding, not after
        print(f"prepare: {note}", flush=True)
    for note in plan_notes(p):
        print(f"prepare: {note}", flush=True)
    n_shards = math.ceil(len(p.keep) / cfg.per_shard)
    _write_plan(out, cfg, p, n_shards)
    shards_dir = out / "shards"
    mine = [j for j in range(n_shards) if j % n == i]
    todo = []
    for j in mine:
        why = shard_complete(shards_dir, j) if shards_dir.is_dir() else "not written"
        if why is None:
            failed = _failed_downloads(shards_dir, j) if cfg.retry_downloads else 0
            if not failed:
                continue
            why = f"{failed} download(s) failed there (--retry-downloads)"
        if why != "not written":  # redo it: the index alone would pass it as done
            print(f"prepare: shard {shard_name(j)} is redone: {why}", flush=True)
            (shards_dir / f"{shard_name(j)}.json").unlink()
        todo.append(j)
    if len(todo) < len(mine):
        print(
            f"prepare: {len(mine) - len(todo)} of this job's {len(mine)} shard(s) already "
            f"written in {out}: "
            + (f"resuming with the other {len(todo)}" if todo else "nothing left to write"),
            flush=True,
        )
    for j in todo:  # partial files of killed writers: a rerun writes its own
        for tmp in stale_temporaries(shards_dir, j):
            tmp.unlink(missing_ok=True)
    work = {j: p.keep[j * cfg.per_shard : (j + 1) * cfg.per_shard] for j in todo}
    _run_shards(work, shards_dir, cfg, progress)
    for j in mine:  # also of shards done before: a worker orphaned by a kill -9 goes on
        _clear_stale(shards_dir, j)  # for up to half a second, and may begin another
    present = [j for j in range(n_shards) if (shards_dir / f"{shard_name(j)}.json").exists()]
    summary: dict[str, int | dict] = {
        "shards": n_shards,
        "done_here": len(todo),
        "present": len(present),
    }
    if len(present) == n_shards:
        summary["report"] = finalize(out, progress=progress)
    return summary


# a client error other than a timeout or a rate limit: the same on every try
_FOR_GOOD = re.compile(r"^HTTP 4(?!08|29)\d\d\b")


def _failed_downloads(folder: Path, index: int) -> int:
    """Recordings of a written shard whose download failed in a way that may pass."""
    rejected = read_index(folder / f"{shard_name(index)}.json")["rejected"]
    return sum(r["reason"] == DOWNLOAD and not _FOR_GOOD.match(r["detail"]) for r in rejected)


def _write_plan(out: Path, cfg: PrepareConfig, p: Plan, n_shards: int) -> None:
    """Machines sharing `out` must have planned the same recordings the same way."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "digest": p.digest(),
        "per_shard": cfg.per_shard,
        "shards": n_shards,
        "manifest": str(Path(cfg.manifest).resolve()),
        "catalogue": str(Path(cfg.catalogue).resolve()),
        "traits": str(Path(cfg.traits).resolve()) if cfg.traits else None,
        "rows": p.rows,
        "planned": len(p.keep),
        "left_out": dict(p.left_out),
        "left_out_examples": p.examples,
        "background_not_in_catalogue": dict(p.background_unknown.most_common()),
        "species_named": dict(p.named.most_common()),
        "ids_naming_several_files": p.reused_ids,
        "settings": asdict(cfg.settings),
        "codec": cfg.codec,
        "qualities": cfg.qualities,
        "seed": cfg.seed,
        "traits_digest": _file_digest(cfg.traits, "--traits") if cfg.traits else None,
        "key_scheme": KEY_SCHEME,
        "plan_rules": PLAN_RULES,
    }
    path = out / PLAN

    def with_files() -> dict:
        # read again only where a plan is written or refused, not by every job resuming
        # one: what changed is named from them (a manifest may be hundreds of MB)
        return {
            **record,
            "manifest_digest": _file_digest(cfg.manifest, "manifest"),
            "catalogue_digest": _file_digest(cfg.catalogue, "--catalogue"),
        }

    if not path.exists():
        # jobs of one array (`--shard i/N`) start together: each writes its own temporary
        # file and links it in; the first wins, the others check theirs against it
        for dead in dead_temporaries(path):  # a job killed between write and link
            dead.unlink(missing_ok=True)
        tmp = out / f".{PLAN}.{writer_tag()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps(with_files(), indent=2), encoding="utf-8")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not path.exists():
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        old.setdefault("codec", "flac")  # plans written before --codec
        rekeyed = any(_REKEYED.search(r.key) for r in p.keep)  # ids the new scheme changes
        if old["digest"] != record["digest"] and old.get("key_scheme") != KEY_SCHEME and rekeyed:
            raise ValueError(
                f"{out} was planned before 2026-11-27, when manifest ids with characters "
                "other than letters, digits, _ and - were keyed otherwise: prepare into a "
                "new --out (or finish this one with the version that began it)"
            )
        if old["digest"] != record["digest"] and old.get("plan_rules", 1) != PLAN_RULES:
            raise ValueError(
                f"{out} was planned by an older version of prepare, which reads some rows "
                "of this manifest otherwise (since 2026-11-27: more Creative Commons "
                "spellings kept; rows of one file merged; s3:// URLs and misquoted CSV "
                "rows left out; since 2026-11-29: species named by name kept, each file "
                "of an id given to several kept): prepare into a new --out, or finish this one with the "
                "version that began it"
            )
        if old["digest"] != record["digest"]:
            raise ValueError(_changed_plan(out, old, with_files()))
        for key, option in _SAME_IN_EVERY_JOB:
            # plans written before a key was recorded are not held to it
            if key in old and old[key] != record[key]:
                raise ValueError(
                    f"{out} was prepared with another {option} ({key} {old[key]!r}, here "
                    f"{record[key]!r}); resume with the same one, or use a new --out"
                )
        return


# 2: an id made tar-safe keeps a digest of itself (manifest.recording_key)
KEY_SCHEME = 2
# 2 (2026-11-27): licences found within a text, rows of one file merged, unsupported
# URLs and misquoted CSV rows left out, Parquet cells trimmed. 3 (2026-11-29): species
# named by scientific or common name kept; each file of an id naming several kept. A
# plan made by other rules may differ for the same manifest: resuming under it is
# refused as such.
PLAN_RULES = 3
_REKEYED = re.compile(r"-[0-9a-f]{8}$")

# What every job sharing an --out must give alike (plan.json key, what the user set).
_SAME_IN_EVERY_JOB = (
    ("per_shard", "--per-shard"),
    ("settings", "decode setting"),
    ("codec", "--codec"),
    ("seed", "--seed (of the split)"),
    ("traits_digest", "--traits table"),
)


def _file_digest(path: str, what: str) -> str:
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as e:
        raise ValueError(f"{what} {path}: {e.strerror}") from None


def _changed_plan(out: Path, old: dict, new: dict) -> str:
    """Why a job may not write into `out`: its manifest or catalogue plans other
    recordings than the jobs before it did. Says which file changed (plans before
    2026-11-29 did not record them) and what to do: a prepared folder is of one
    manifest; shards are not patched in place."""
    changed = [
        what
        for what in ("manifest", "catalogue")
        if old.get(f"{what}_digest") not in (None, new[f"{what}_digest"])
    ]
    which = " and ".join(changed) if changed else "manifest or catalogue"
    return (
        f"{out} was prepared from another {which} ({old['planned']} recordings planned "
        f"there, {new['planned']} here; digest {old['digest']!r}, here {new['digest']!r}): "
        "resume with the same files, or prepare the changed manifest into a new --out "
        "(a withdrawn recording stays in the old folder until it is deleted)"
    )


def plan_notes(p: Plan) -> list[str]:
    """What a plan read otherwise than written, or left out for a species the
    catalogue lacks: said at the start of every job, with the first few."""
    notes = []
    if p.left_out[UNKNOWN_SPECIES]:
        first = "; ".join(p.examples[UNKNOWN_SPECIES][:3])
        notes.append(
            f"{p.left_out[UNKNOWN_SPECIES]} row(s) left out: their species_id is no catalogue "
            f"id, scientific or common name ({first}); add the species to the catalogue "
            "(`animalclap-train catalogue`) or correct the names, if they are to be kept"
        )
    if p.named:
        first = ", ".join(list(p.named)[:3])
        notes.append(
            f"{p.named.total()} row(s) name their species by name, read as catalogue ids "
            f"({first}{', ...' if len(p.named) > 3 else ''})"
        )
    if p.reused_ids:
        first = "; ".join(
            f"{rid} ({', '.join(map(str, lines))})" for rid, lines in list(p.reused_ids.items())[:3]
        )
        notes.append(
            f"{len(p.reused_ids)} id(s) name more than one file ({first}): each file is kept, "
            "under the id and a digest of its location; give each recording its own id "
            "(e.g. prefixed with its source) for keys that say which it is"
        )
    return notes


def write_shard(
    index: int,
    recordings: list[SourceRecording],
    folder: Path,
    settings: DecodeSettings,
    ticks=None,
    codec: str = "flac",
    crashed: frozenset[str] = frozenset(),
) -> dict:
    """Decode one shard's recordings into shards/shard-<index>.{tar,json}. `ticks` gets
    -1 - index when the shard starts, then index after each recording; the keys in
    `crashed` killed the process decoding them, and are rejected without decoding."""
    writer = ShardWriter(folder, index, codec)
    try:
        if ticks is not None:
            ticks.put(-1 - index)
        for rec in recordings:
            try:
                if rec.key in crashed:
                    raise Rejected(
                        CRASHED, "its decoding process died or hung on it, decoding alone"
                    )
                audio = load_source(rec.uri, settings)
            except Rejected as e:
                writer.reject(rec.key, rec.uri, e.reason, e.detail)
            else:
                with audio:
                    writer.add(rec.key, audio.blocks(), rec.meta())
            if ticks is not None:
                ticks.put(index)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"shard": index, "records": len(writer.records), "rejected": len(writer.rejected)}


_TICKS = None  # in a worker process: where its progress ticks go


def _worker_init(parent: int, ticks) -> None:
    global _TICKS
    _TICKS = ticks
    # The main process decides what an interrupt stops, and stops its workers itself
    # (_pool_pass): a Ctrl-C to the process group (or `timeout -s INT`, which signals
    # the group too) raised KeyboardInterrupt in a worker mid-decode, inside
    # soundfile's C callbacks ("Exception ignored from cffi callback"), once hanging it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)


def exit_with_parent(parent: int) -> None:
    """End this worker process soon after `parent` ends, however it ends: a worker
    orphaned by a SIGKILL went on writing queued shards beside the rerun's."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _write_shard_in_worker(
    index: int,
    recordings: list,
    folder: Path,
    settings: DecodeSettings,
    codec: str,
    crashed: frozenset[str],
) -> dict:
    if _TICKS is not None:  # (shard, pid): the process to stop if the shard hangs
        _TICKS.put((index, os.getpid()))
    return write_shard(index, recordings, folder, settings, _TICKS, codec, crashed)


def _run_shards(work: dict[int, list], folder: Path, cfg: PrepareConfig, progress: bool) -> None:
    from tqdm.auto import tqdm

    total = sum(len(v) for v in work.values())
    bar = tqdm(total=total, desc="prepare", unit="rec", disable=not progress or not total)
    remaining = dict(work)
    try:
        # In worker processes even for --workers 1 (a pool of one): decoded in this
        # process, a recording that killed it (out of memory, a decoder crash) took the
        # run with it on every rerun, and a hung decoder hung the run for ever.
        crashed: set[str] = set()  # keys whose process died on them, decoding alone
        while remaining:
            finished, broken, hung = _pool_pass(remaining, folder, cfg, cfg.workers, bar, crashed)
            # A hang is its recording's own (a stuck decoder, a hung mount), unlike a
            # death, which the OOM killer may deal to any process: left out now, so the
            # redo below does not wait out the timeout on it a second time.
            for j in hung:
                if broken[j] < len(remaining[j]):  # past its last: hung writing, not decoding
                    _left_out(remaining[j][broken[j]], crashed, _hung_why(cfg))
            # A process died (the OOM killer, a decoder's crash) and took the pool with
            # it: each shard that was being written is redone in a pool of its own, where
            # a death is its own recording's, which is then left out. Up to `workers`
            # of them at once: one at a time, a death among 32 workers redid the other
            # 31 shards in one process. (Out of memory, the kernel kills the process
            # that holds the most, as a rule the one decoding the longest recording.)
            # The shards not begun go on in the next pass.
            if broken:
                _redo_side_by_side(broken, remaining, folder, cfg, bar, crashed)
            for j in finished | set(broken):
                remaining.pop(j, None)
            for j in remaining:
                _clear_stale(folder, j)
    except BaseException:
        # interrupted (Ctrl-C, `kill -INT`): the processes writing are stopped and
        # joined (_stop_workers); their half-written shards go, the whole ones stay, and
        # the rerun resumes from them
        for j in remaining:
            _clear_stale(folder, j)
        raise
    finally:
        bar.close()


def _redo_side_by_side(
    broken: dict[int, int],
    remaining: dict[int, list],
    folder: Path,
    cfg: PrepareConfig,
    bar,
    crashed: set[str],
) -> None:
    """`_redo_alone` for each broken shard, up to `cfg.workers` at once. Stopped
    (Ctrl-C, an error in one of them), every redo stops its process and ends: left
    running, they went on after the main thread had gone (the interpreter joins them
    at exit), and took the death of a process the stop had reached for the
    recording's own, leaving it out of a shard then written whole."""
    stop = threading.Event()
    redo = ThreadPoolExecutor(min(cfg.workers, len(broken)))
    try:
        jobs = [
            redo.submit(_redo_alone, j, remaining[j], folder, cfg, bar, crashed, stop)
            for j in broken
        ]
        pending = set(jobs)
        while pending:
            # Timed: the kernel may hand Ctrl-C to any thread, and a main thread blocked
            # without a timeout ran its handler only when the job ended (30 s in a test).
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
            for job in done:
                job.result()  # the first redo's error, at once
    except BaseException:
        stop.set()
        raise
    finally:
        redo.shutdown(wait=True)


def _redo_alone(
    j: int,
    recs: list,
    folder: Path,
    cfg: PrepareConfig,
    bar,
    crashed: set[str],
    stop: threading.Event,
) -> None:
    """Shard `j` in a one-process pool until it is written: each time its process dies,
    the recording it was decoding joins `crashed` and is left out of the next try.
    Returns unwritten once `stop` is set."""
    while not stop.is_set():
        _clear_stale(folder, j)
        done, again, hung = _pool_pass({j: recs}, folder, cfg, 1, bar, crashed, stop)
        if j in done or stop.is_set():  # a death the stop caused is no recording's
            return
        pos = again.get(j, len(recs))
        rec = recs[pos] if pos < len(recs) else None
        if rec is None or rec.key in crashed:
            raise RuntimeError(f"shard {shard_name(j)}: its process died, alone")
        why = (
            _hung_why(cfg)
            if j in hung
            else "killed its decoding process (out of memory? a decoder crash?)"
        )
        _left_out(rec, crashed, why)


def _hung_why(cfg: PrepareConfig) -> str:
    return (
        f"made no progress in {cfg.record_timeout_s:g} s (--record-timeout), so its "
        "process was stopped"
    )


def _left_out(rec, crashed: set[str], why: str) -> None:
    crashed.add(rec.key)  # other threads read it: one set, added to under the GIL
    print(f"prepare: {rec.uri} {why}: left out as '{CRASHED}'", flush=True)


def _pool_pass(
    work: dict[int, list],
    folder: Path,
    cfg: PrepareConfig,
    workers: int,
    bar,
    crashed: set[str],
    stop: threading.Event | None = None,
) -> tuple[set[int], dict[int, int], set[int]]:
    """Write `work`'s shards in a pool of `workers` processes: the shards finished;
    where a process died, {shard: its recordings done} of those it had begun and not
    finished (their progress taken back off the bar); and the shards whose process was
    stopped because one recording took longer than `cfg.record_timeout_s` (a death
    like any other to the pool). A worker's real error (disk full, a bug) stops the
    run: no shard starts after it; those running finish, kept for the rerun. Once
    `stop` is set, its processes are killed and what was finished is returned."""
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    ticks = ctx.SimpleQueue()
    begun: dict[int, int] = {}  # shard -> its recordings done so far
    pids: dict[int, int] = {}  # shard -> the process writing it
    last: dict[int, float] = {}  # shard -> when it last moved (monotonic s)
    hung: set[int] = set()
    finished: set[int] = set()
    ended: set[int] = set()  # shards whose future is done, however
    died = False
    failure: BaseException | None = None
    with ProcessPoolExecutor(
        max(1, min(workers, len(work))),  # no more processes than shards: see the submit below
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(os.getpid(), ticks),
    ) as pool:
        try:
            futures = {
                pool.submit(
                    _write_shard_in_worker,
                    j,
                    recs,
                    folder,
                    cfg.settings,
                    cfg.codec,
                    frozenset(r.key for r in recs if r.key in crashed),
                ): j
                for j, recs in work.items()
            }
            # CPython (3.11-3.13) wakes the pool's manager thread before it spawns the
            # process a submit needs, so the processes spawned by the later submits can go
            # unwatched: a death among them was noticed only when another process returned
            # its shard (30 s in a test; a shard's time at scale), and the redo waited. One
            # more submit, which spawns nothing with a process per shard, has the manager
            # watch them all.
            pool.submit(int)
            pending = set(futures)

            def drain() -> None:
                while not ticks.empty():  # always: a worker blocks on a full tick pipe
                    tick = ticks.get()
                    if isinstance(tick, tuple):
                        j, pid = tick
                        # a process that begins a shard is done with its last one, however
                        # that ended (a real error is never seen finished): stop timing it,
                        # or its timeout would kill this shard's process
                        for other in [o for o, p in pids.items() if p == pid]:
                            del pids[other]
                            last.pop(other, None)
                        pids[j] = pid
                        continue
                    j = -1 - tick if tick < 0 else tick
                    last[j] = time.monotonic()
                    if tick < 0:
                        begun[j] = 0
                    else:
                        begun[j] = begun.get(j, 0) + 1
                        bar.update(1)

            def stop_hung() -> None:
                limit = cfg.record_timeout_s
                now = time.monotonic()
                for j, t in last.items():
                    if limit and j not in ended and j not in hung and now - t > limit:
                        hung.add(j)
                        with contextlib.suppress(ProcessLookupError, KeyError):
                            os.kill(pids[j], signal.SIGKILL)

            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                drain()
                for fut in done:
                    ended.add(futures[fut])
                    if fut.cancelled():
                        continue
                    e = fut.exception()
                    if e is None:
                        finished.add(futures[fut])
                    elif isinstance(e, BrokenProcessPool):
                        died = True
                    elif failure is None:
                        failure = e
                        for waiting in pending:
                            waiting.cancel()
                stop_hung()  # after the shards just done are known: theirs is no hang
                if stop is not None and stop.is_set():
                    for pid in pids.values():  # their futures then end, the pool broken
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    pids.clear()
            drain()
        except BaseException:
            # KeyboardInterrupt (a SIGINT to this process alone: `kill -INT`, a
            # scheduler; the workers ignore it), or an error here: leaving the block
            # waited for every shard queued, all written after the interrupt.
            _stop_workers(pool, pids.values())
            raise
    if stop is not None and stop.is_set():
        return finished, {}, set()
    if failure is not None:
        raise failure
    if not died:
        return finished, {}, set()
    broken = {j: n for j, n in begun.items() if j not in finished}
    if not broken:
        raise RuntimeError("a decoding process died before it began a shard")
    bar.update(-sum(broken.values()))  # redone from their first recording
    return finished, broken, hung & set(broken)


def _stop_workers(pool: ProcessPoolExecutor, pids) -> None:
    """Kill the pool's processes, cancel the shards not begun and join the pool: a
    plain exit from the pool waited for every queued shard to be written, and a worker
    left waiting on its pipe hung it for good. The shards being written are abandoned;
    their partial files go (_run_shards, or the rerun)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # CPython's own
    for pid in {p.pid for p in procs} | set(pids):  # pids: those that began a shard
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(pid, signal.SIGKILL)
    # the pool's manager thread sees them dead, fails what is left and joins them
    pool.shutdown(wait=True, cancel_futures=True)


def _clear_stale(folder: Path, index: int) -> None:
    for tmp in stale_temporaries(folder, index):
        tmp.unlink(missing_ok=True)


def finalize(out: str | Path, progress: bool = True) -> dict:
    """Merge shard indexes into records.jsonl, write the report and the split."""
    from training.labelled_audio import Item, _stored_background, site_day
    from training.splits import zero_shot_split

    out = Path(out)
    if not (out / PLAN).is_file():
        raise ValueError(
            f"{out}: no {PLAN} (not a prepare output, or no shard job has started there): "
            "run prepare --shard i/N into it first"
        )
    meta = json.loads((out / PLAN).read_text(encoding="utf-8"))
    missing = [
        j for j in range(meta["shards"]) if not (out / "shards" / f"{shard_name(j)}.json").exists()
    ]
    if missing:
        raise ValueError(
            f"{out}: {len(missing)} of {meta['shards']} shards not written yet "
            f"(first: {shard_name(missing[0])}); run prepare on the remaining --shard i/N first"
        )
    for j in range(meta["shards"]):  # partial files of writers gone (this host's, or old)
        _clear_stale(out / "shards", j)
    catalogue = Catalogue.from_csv(meta["catalogue"])
    reasons: Counter = Counter(meta["left_out"])
    examples = {k: list(v) for k, v in meta["left_out_examples"].items()}
    records = []
    for j in range(meta["shards"]):
        index = read_index(out / "shards" / f"{shard_name(j)}.json")
        for rec in index["records"]:
            records.append({**rec, "shard": index["tar"]})
        for rej in index["rejected"]:
            reasons[rej["reason"]] += 1
            ex = examples.setdefault(rej["reason"], [])
            if len(ex) < 5:
                ex.append(f"{rej['uri']}: {rej['detail']}")

    def write_records(path: Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, sort_keys=True) + "\n")

    write_whole(out / "records.jsonl", write_records)
    write_whole(out / "catalogue.csv", catalogue.to_csv)
    if meta.get("traits"):
        write_whole(out / "traits.csv", lambda path: shutil.copyfile(meta["traits"], path))

    per_species = Counter(r["species_id"] for r in records)
    report = {
        "manifest_rows": meta["rows"],
        "recordings": len(records),
        "hours": round(sum(r["duration_s"] for r in records) / 3600, 3),
        "species": len(per_species),
        "catalogue_species": len(catalogue),
        "recordings_per_species": _quantiles(list(per_species.values())),
        "rejected": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "rejected_examples": examples,
        "shards": meta["shards"],
        # plans before 2026-11-29 recorded neither
        "species_named": meta.get("species_named", {}),
        "ids_naming_several_files": meta.get("ids_naming_several_files", {}),
    }
    read_background = background_reader(catalogue)
    items = [
        Item(
            r["key"],
            r["species_id"],
            site_day(r["site"], r["date"]),
            r["duration_s"],
            # shards written before 2026-11-27: none; before its later fix, names the
            # reader did not match then (a list literal's brackets): read again
            _stored_background(r, catalogue, read_background),
        )
        for r in records
    ]
    # of the recordings kept, as the split reads them (plan.json's count also has
    # the rows decoding rejected)
    unknown = background_unmatched(items, catalogue)
    report["background_not_in_catalogue"] = dict(unknown.most_common())
    if note := unmatched_note(unknown):
        print(f"prepare: {note}", flush=True)
    try:
        split = zero_shot_split(items, catalogue, seed=meta["seed"])
    except ValueError as e:
        report["split"] = f"not written: {e}"
    else:
        write_whole(out / "split.json", split.to_json)
        report["split"] = split.summary(catalogue)
    report["plot"] = _plot(report, list(per_species.values()), out / "report.png")
    as_json, as_md = json.dumps(report, indent=2), _report_md(report)
    write_whole(out / PREPARED, lambda path: path.write_text(as_json, encoding="utf-8"))
    write_whole(out / "report.md", lambda path: path.write_text(as_md, encoding="utf-8"))
    if not records:  # a run that kept nothing is a failure, with its report kept
        top = ", ".join(f"{n} {why}" for why, n in list(report["rejected"].items())[:3])
        retry = " (run again with --retry-downloads once they can be reached)"
        raise ValueError(
            f"{out}: no recording was kept ({top}); see {out / 'report.md'} for "
            f"examples of each reason{retry if DOWNLOAD in reasons else ''}"
        )
    return report


def _plot(report: dict, per_species: list[int], out_png: Path) -> str:
    """report.png, or why it was not drawn (said in report.md; the data is unaffected)."""
    try:
        from training.prepare.plot import plot_prepared

        write_whole(out_png, lambda path: plot_prepared(report, per_species, path))
        return out_png.name
    except ImportError as e:
        return f"not drawn ({e.name} is missing: pip install 'animalclap-edge[plot]')"


def _quantiles(counts: list[int]) -> dict:
    if not counts:
        return {}
    s = sorted(counts)
    return {
        "min": s[0],
        "median": s[len(s) // 2],
        "p90": s[min(len(s) - 1, int(0.9 * len(s)))],
        "max": s[-1],
    }


def _report_md(r: dict) -> str:
    lines = [
        "# Data preparation report",
        "",
        f"- manifest rows: {r['manifest_rows']}",
        f"- prepared: {r['recordings']} recordings, {r['hours']} h, {r['species']} of "
        f"{r['catalogue_species']} catalogue species, in {r['shards']} shard(s)",
        f"- recordings per species: {r['recordings_per_species']}",
        "",
        "| left out because | rows | examples |",
        "|---|---|---|",
    ]
    for reason, n in r["rejected"].items():
        ex = "; ".join(r["rejected_examples"].get(reason, [])[:2]).replace("|", "/")
        if reason == DOWNLOAD:
            ex += " (`--retry-downloads` tries those that may pass again)"
        lines.append(f"| {reason} | {n} | {ex} |")
    if named := r.get("species_named"):
        lines += [
            "",
            f"{sum(named.values())} rows name their species by scientific or common name, "
            "read as catalogue ids: " + ", ".join(f"{k} ({n})" for k, n in list(named.items())[:5]),
        ]
    if reused := r.get("ids_naming_several_files"):
        lines += [
            "",
            f"{len(reused)} ids name more than one file, each kept under the id and a digest "
            "of its location: "
            + "; ".join(
                f"{i} (rows {', '.join(map(str, ls))})" for i, ls in list(reused.items())[:5]
            ),
        ]
    unknown = r.get("background_not_in_catalogue") or {}
    if unknown:
        names = ", ".join(f"{b} ({n})" for b, n in list(unknown.items())[:5])
        lines += [
            "",
            f"**Warning**: {len(unknown)} background species names, in "
            f"{sum(unknown.values())} recordings, match no catalogue id, scientific or "
            f"common name (kept as written), e.g. {names}. Where one is a catalogue "
            "species written otherwise, recordings in which an unseen species calls are "
            "trained on: correct the names in the manifest, or add the species to the "
            "catalogue.",
        ]
    split = r["split"]
    if isinstance(split, dict):
        n = split["recordings"]
        split = (
            f"{split['test_species']} unseen test species ({split['stop_reason']}), "
            f"{split['seen_species']} seen; recordings train {n['train']}, val {n['val']}, "
            f"test {n['test']}, left out for an unseen species in the background "
            f"{n['heard_unseen']} (split.json)"
        )
    lines += ["", f"Zero-shot split: {split}", ""]
    plot = r.get("plot", "")
    if plot.endswith(".png"):
        lines += [f"![recordings per species, and rows left out]({plot})", ""]
    elif plot:
        lines += [f"Figure: {plot}", ""]
    return "\n".join(lines)
