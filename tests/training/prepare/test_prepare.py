"""`prepare` end to end: real recordings, planted broken ones, an M4A, HTTP URLs;
resuming, splitting across machines, and reading the result back for training."""

import csv
import functools
import http.server
import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from animalclap_edge.audio.decode import read_all
from training.cli import main
from training.labelled_audio import open_labelled
from training.prepare import decode as d
from training.prepare.manifest import NOT_CC
from training.prepare.run import PrepareConfig, finalize, prepare

CATALOGUE = Path(__file__).parents[1] / "data" / "realaudio_catalogue.csv"
SR = 44_100


@pytest.fixture(scope="module")
def http_dir(tmp_path_factory):
    """A real HTTP server on localhost, serving one WAV."""
    root = tmp_path_factory.mktemp("www")
    t = np.arange(2 * SR) / SR
    sf.write(root / "remote.wav", 0.2 * np.sin(2 * np.pi * 2000 * t), SR)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _planted(folder: Path) -> dict[str, str]:
    """Broken and odd recordings: file name -> the reason prepare must give (or "ok")."""
    t = np.arange(2 * SR) / SR
    tone = (0.2 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    sf.write(folder / "silent.wav", np.zeros(2 * SR, np.float32), SR)
    sf.write(folder / "short.wav", tone[: SR // 4], SR)
    sf.write(folder / "cut.wav", tone, SR, subtype="PCM_16")
    data = (folder / "cut.wav").read_bytes()
    (folder / "cut.wav").write_bytes(data[: len(data) // 2])  # power lost mid-write
    (folder / "notes.wav").write_text("field notes, not audio\n" * 50)
    # FFmpeg took it for a stream with no frames: counted "too short: 0.00 s"
    (folder / "notes.flac").write_text("not audio\n")
    av = pytest.importorskip("av")
    with av.open(str(folder / "phone.m4a"), "w") as out:  # AAC: not a libsndfile format
        stream = out.add_stream("aac", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone[None, :], format="flt", layout="mono")
        frame.rate = SR
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return {
        "silent.wav": d.SILENT,
        "short.wav": d.TOO_SHORT,
        "cut.wav": d.BROKEN,
        "notes.wav": d.UNDECODABLE,
        "notes.flac": d.UNDECODABLE,
        "phone.m4a": "ok",
        "gone.wav": d.MISSING,
    }


@pytest.fixture(scope="module")
def manifest(realaudio, http_dir, tmp_path_factory) -> tuple[Path, dict]:
    """shared/realaudio's catalogued species (CC and non-CC rows) plus planted files."""
    folder = tmp_path_factory.mktemp("field")
    species = [r["id"] for r in csv.DictReader(CATALOGUE.open())]
    by_name = {r["scientific_name"]: r["id"] for r in csv.DictReader(CATALOGUE.open())}
    rows, taken = [], {True: 0, False: 0}
    for r in csv.DictReader((realaudio / "manifest.csv").open()):
        binomial = " ".join(r["scientific_name"].split()[:2])
        cc = r["license"].startswith("CC")
        if binomial in by_name and taken[cc] < (30 if cc else 8):
            taken[cc] += 1
            rows.append(
                {
                    "path": str(realaudio / r["path"]),
                    "species_id": by_name[binomial],
                    "licence": r["license"],
                    "date": "2024-06-0" + str(len(rows) % 3 + 1),
                    "site": r["dataset"],
                }
            )
    expected = _planted(folder)
    for i, (name, _) in enumerate(expected.items()):
        rows.append(
            {
                "path": name,  # relative to the manifest
                "species_id": species[i],
                "licence": "CC BY-NC 4.0",
                "date": "2024-06-01",
                "site": "planted",
            }
        )
    rows.append({**rows[-1], "path": f"{http_dir}/remote.wav"})
    rows.append({**rows[-1], "path": f"{http_dir}/missing.wav"})
    expected["remote.wav"], expected["missing.wav"] = "ok", d.DOWNLOAD
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path, expected


def _cfg(manifest, out, **kw) -> PrepareConfig:
    kw = {"per_shard": 8, "workers": 1, "catalogue": str(CATALOGUE), **kw}
    return PrepareConfig(manifest=str(manifest), out=str(out), **kw)


@pytest.fixture(scope="module")
def prepared(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    summary = prepare(_cfg(manifest[0], out), progress=False)
    return out, summary


def test_every_row_is_prepared_or_counted_with_its_reason(manifest, prepared):
    path, expected = manifest
    out, summary = prepared
    report = summary["report"]
    rows = list(csv.DictReader(path.open()))
    assert report["manifest_rows"] == len(rows)
    assert report["recordings"] + sum(report["rejected"].values()) == len(rows)
    non_cc = [r for r in rows if not r["licence"].startswith("CC")]
    assert report["rejected"][NOT_CC] == len(non_cc) == 8
    rejected, reasons, details = {}, Counter({NOT_CC: len(non_cc)}), {}
    for shard in sorted((out / "shards").glob("*.json")):
        for rej in json.loads(shard.read_text())["rejected"]:
            rejected[Path(rej["uri"]).name] = rej["reason"]
            details[Path(rej["uri"]).name] = rej["detail"]
            reasons[rej["reason"]] += 1
    # FFmpeg's reason in words, without its meaningless AVERROR code
    assert details["notes.wav"].startswith("FFmpeg: ") and "Errno" not in details["notes.wav"]
    # the report shows "uri: detail": the detail does not say the uri again
    assert details["missing.wav"] == "HTTP 404 (after 1 attempt)"
    # the report's count of each reason is the sum of the shards' rejections
    assert report["rejected"] == dict(reasons)
    assert all(reasons[r] >= 1 for r in expected.values() if r != "ok")
    prepared_uris = {Path(json.loads(line)["uri"]).name for line in (out / "records.jsonl").open()}
    for name, reason in expected.items():
        if reason == "ok":
            assert name in prepared_uris, name
        else:
            assert rejected.get(name) == reason, (name, rejected.get(name))
    assert "| licence not Creative Commons |" in (out / "report.md").read_text()


def test_the_report_has_a_figure_of_the_long_tail_and_the_left_out_rows(prepared):
    """report.png, linked from report.md: recordings per species and rows per reason."""
    from PIL import Image

    out, summary = prepared
    assert summary["report"]["plot"] == "report.png"
    assert (
        "![recordings per species, and rows left out](report.png)"
        in (out / "report.md").read_text()
    )
    with Image.open(out / "report.png") as im:
        assert im.format == "PNG" and im.size == (1210, 440)  # 11 x 4 in at 110 dpi
        # drawn on, not blank: a page of one colour has a single-entry histogram
        assert len(im.convert("L").getcolors(maxcolors=256 * 256) or []) > 10


def test_shard_audio_is_the_source_at_48k(prepared, realaudio):
    out, _ = prepared
    data = open_labelled(str(out))
    assert len(data.items) == prepared[1]["report"]["recordings"]
    meta = {json.loads(line)["key"]: json.loads(line) for line in (out / "records.jsonl").open()}
    compared = 0
    for it in data.items:
        uri = meta[it.id]["uri"]
        if "://" in uri or not uri.startswith(str(realaudio)) or compared == 8:
            continue
        compared += 1
        wave = data.load(it)
        ref = np.clip(read_all(uri, 48_000), -1, 1)
        assert wave.shape == ref.shape
        assert np.max(np.abs(wave - ref)) <= 1 / 32768 + 1e-6  # 16-bit FLAC
    assert compared == 8
    # the files prepare decodes itself (AAC through PyAV, a download) keep their
    # length and their tone: 2 s at 44.1 kHz -> 96,000 samples at 48 kHz
    tones = {"phone.m4a": 3000.0, "remote.wav": 2000.0}
    for it in data.items:
        name = Path(meta[it.id]["uri"]).name
        if name in tones:
            wave = data.load(it)
            assert abs(len(wave) - 96_000) <= 2400, (name, len(wave))  # AAC: 2 frames of padding
            spectrum = np.abs(np.fft.rfft(wave))
            assert abs(np.argmax(spectrum) * 48_000 / len(wave) - tones.pop(name)) < 5
    assert not tones, f"not prepared: {sorted(tones)}"
    split = json.loads((out / "split.json").read_text())
    assert split["test_species"] and split["train"]


def test_a_crop_reads_only_its_frames_from_the_shard_and_equals_a_full_decode(prepared):
    from training.labelled_audio import _read_crop, crop
    from training.prepare.shards import RecordRegion

    data = open_labelled(str(prepared[0]))
    n = 48_000  # 1 s: most of these recordings are longer
    partial = 0
    for it in data.items:
        region = data.file_of(it)
        assert isinstance(region, RecordRegion)
        for seed in (0, 1):
            fast = data.crop(it, n, np.random.default_rng(seed))
            full = crop(data.load(it), n, np.random.default_rng(seed))
            np.testing.assert_array_equal(fast, full, err_msg=f"{it.id} seed {seed}")
        long = it.duration_s * 48_000 > n
        assert (_read_crop(region, n, None, 48_000) is not None) == long, it.id
        partial += long
    assert partial >= len(data.items) // 2  # real recordings longer than the crop: partial reads


def test_wav_shards_hold_the_same_samples_as_flac_shards(manifest, prepared, tmp_path):
    import tarfile

    from training.labelled_audio import _read_crop

    out = tmp_path / "wav"
    prepare(_cfg(manifest[0], out, codec="wav"), progress=False)
    flac, wav = open_labelled(str(prepared[0])), open_labelled(str(out))
    assert [it.id for it in wav.items] == [it.id for it in flac.items]
    for it in wav.items:
        np.testing.assert_array_equal(wav.load(it), flac.load(it), err_msg=it.id)
        rng = (np.random.default_rng(3), np.random.default_rng(3))
        np.testing.assert_array_equal(wav.crop(it, 48_000, rng[0]), flac.crop(it, 48_000, rng[1]))
        if it.duration_s > 1:  # the WAV member is read in part, as the FLAC one
            assert _read_crop(wav.file_of(it), 48_000, None, 48_000) is not None
    with tarfile.open(next((out / "shards").glob("*.tar"))) as tar:
        assert {Path(n).suffix for n in tar.getnames()} == {".wav", ".json"}
    assert json.loads(next((out / "shards").glob("*.json")).read_text())["codec"] == "wav"
    with pytest.raises(ValueError, match="--codec"):  # a resumed run keeps its codec
        prepare(_cfg(manifest[0], out, codec="flac"), progress=False)


def test_a_killed_run_resumes_and_redoes_only_the_missing_shard(
    manifest, prepared, tmp_path, capsys
):
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(prepared[0], out)
    (out / "shards" / "shard-000001.json").unlink()  # died before the index was written
    (out / "shards" / "shard-000001.tar").rename(out / "shards" / "shard-000001.tar.tmp")
    kept = (out / "shards" / "shard-000000.tar").stat().st_mtime_ns
    summary = prepare(_cfg(manifest[0], out), progress=False)
    assert summary["done_here"] == 1
    assert "4 of this job's 5 shard(s) already written" in capsys.readouterr().out
    assert (out / "shards" / "shard-000000.tar").stat().st_mtime_ns == kept
    assert not (out / "shards" / "shard-000001.tar.tmp").exists()
    assert (out / "records.jsonl").read_text() == (prepared[0] / "records.jsonl").read_text()
    # a tar lost or cut short after its index was written: redone, not passed as done
    (out / "shards" / "shard-000000.tar").unlink()
    with open(out / "shards" / "shard-000001.tar", "r+b") as f:
        f.truncate(1000)
    summary = prepare(_cfg(manifest[0], out), progress=False)
    assert summary["done_here"] == 2
    for j in (0, 1):
        name = f"shard-00000{j}.tar"
        assert (out / "shards" / name).read_bytes() == (prepared[0] / "shards" / name).read_bytes()


def test_machines_sharing_an_output_give_the_same_result_as_one(manifest, prepared, tmp_path):
    out = tmp_path / "shared"
    first = prepare(_cfg(manifest[0], out, shard="0/2"), progress=False)
    assert "report" not in first and first["present"] < first["shards"]
    with pytest.raises(ValueError, match="shards not written yet"):
        finalize(out)
    second = prepare(_cfg(manifest[0], out, shard="1/2", workers=2), progress=False)
    assert second["report"]["recordings"] == prepared[1]["report"]["recordings"]
    assert (out / "records.jsonl").read_text() == (prepared[0] / "records.jsonl").read_text()
    for tar in (prepared[0] / "shards").glob("*.tar"):
        assert (out / "shards" / tar.name).read_bytes() == tar.read_bytes()


def test_shard_jobs_starting_together_on_a_new_output_both_finish(manifest, prepared, tmp_path):
    """An array job's tasks start at once: both used to write the plan through one
    temporary name, and one failed with 'No such file ... plan.tmp -> plan.json'."""
    from concurrent.futures import ThreadPoolExecutor

    out = tmp_path / "array"
    out.mkdir()
    for attempt in range(3):  # the race is timing-bound: give it several chances
        target = out / str(attempt)
        with ThreadPoolExecutor(2) as pool:
            jobs = [
                pool.submit(prepare, _cfg(manifest[0], target, shard=f"{i}/2"), progress=False)
                for i in range(2)
            ]
            [j.result() for j in jobs]  # raises what a job raised
        assert (target / "records.jsonl").read_text() == (prepared[0] / "records.jsonl").read_text()
        assert not list(target.glob(".*tmp"))


def test_a_plan_temporary_a_killed_job_left_is_cleared_by_the_rerun(manifest, tmp_path):
    """A job killed between writing its plan's temporary and linking it in left the
    temporary for good (named by pid only, so no later job could tell it was dead)."""
    import socket
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    dead = out / f".plan.json.{socket.gethostname()}-{ended}.0a1b2c3d.tmp"
    dead.write_text('{"digest": "')
    prepare(_cfg(manifest[0], out), progress=False)
    assert (out / "plan.json").is_file() and not list(out.glob(".*tmp"))


def test_finalize_replaces_each_file_whole_and_a_failed_write_keeps_the_old_one(
    prepared, tmp_path, monkeypatch
):
    """Jobs sharing an --out (`--shard i/N`) may finish, and finalize, together: each
    wrote split.json and the report files in place, so a reader (or the other job)
    could see one cut short, and a full disk left it so. Each is now written to a
    temporary beside it, named by host and pid, then renamed over the old one."""
    import os
    import shutil
    import socket

    from training.splits import ZeroShotSplit

    out = tmp_path / "out"
    shutil.copytree(prepared[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    tried = []

    def disk_full(self, path):
        tried.append(Path(path))
        Path(path).write_text('{"format": "anima')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ZeroShotSplit, "to_json", disk_full)
    with pytest.raises(OSError, match="No space left"):
        finalize(out, progress=False)
    assert (out / "split.json").read_bytes() == before["split.json"]
    assert not list(out.glob(".*tmp"))
    assert tried[0].parent == out and f".{socket.gethostname()}-{os.getpid()}." in tried[0].name
    monkeypatch.undo()

    replaced, real = [], os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: replaced.append(Path(b)) or real(a, b))
    finalize(out, progress=False)
    written = {p.name for p in out.iterdir() if p.is_file()} - {"plan.json"}
    assert written == {p.name for p in replaced if p.parent == out}  # each arrived whole
    assert not list(out.glob(".*tmp"))
    for name in ("records.jsonl", "split.json", "prepared.json", "report.md"):
        assert (out / name).read_bytes() == before[name], name


def test_a_different_manifest_cannot_join_an_output(manifest, prepared, tmp_path):
    import shutil

    out = tmp_path / "other"
    shutil.copytree(prepared[0], out)
    with pytest.raises(ValueError, match=r"another --per-shard .* use a new --out"):
        prepare(_cfg(manifest[0], out, per_shard=5), progress=False)
    # a job's --seed or --traits differing was silently outvoted by the first job's
    with pytest.raises(ValueError, match=r"another --seed \(of the split\) \(seed 0, here 5\)"):
        prepare(_cfg(manifest[0], out, seed=5), progress=False)
    traits = tmp_path / "traits.csv"
    traits.write_text("species_id,activity\n")
    with pytest.raises(ValueError, match=r"another --traits table \(traits_digest None, here '"):
        prepare(_cfg(manifest[0], out, traits=str(traits)), progress=False)


def test_a_changed_manifest_or_catalogue_is_named_with_the_way_on(manifest, prepared, tmp_path):
    """A licence withdrawn after a folder was prepared: the refusal named "manifest or
    catalogue" and a digest, not which had changed, nor how to take the change in."""
    import shutil

    out = tmp_path / "changed"
    shutil.copytree(prepared[0], out)
    rows = list(csv.DictReader(manifest[0].open()))
    for r in rows:  # absolute: the same recordings from another folder
        if "://" not in r["path"]:
            r["path"] = str(manifest[0].parent / r["path"])
    kept = json.loads((prepared[0] / "plan.json").read_text())["planned"]
    edited = tmp_path / "m.csv"
    withdrawn = next(r for r in rows if r["licence"].startswith("CC"))
    for licence in ("CC BY 4.0", "All rights reserved"):
        withdrawn["licence"] = licence
        with edited.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        if licence.startswith("CC"):  # an edit that plans the same: resumes
            assert prepare(_cfg(edited, out), progress=False)["done_here"] == 0
    with pytest.raises(ValueError) as e:
        prepare(_cfg(edited, out), progress=False)
    assert str(e.value).startswith(f"{out} was prepared from another manifest ({kept} ")
    assert f"{kept - 1} here" in str(e.value) and "into a new --out" in str(e.value)
    catalogue = tmp_path / "catalogue.csv"
    species = list(csv.DictReader(CATALOGUE.open()))
    with catalogue.open("w", newline="") as f:  # one species of the kept rows less
        w = csv.DictWriter(f, fieldnames=list(species[0]))
        w.writeheader()
        w.writerows(sp for sp in species if sp["id"] != withdrawn["species_id"])
    with pytest.raises(ValueError, match=f"^{out} was prepared from another catalogue "):
        prepare(_cfg(manifest[0], out, catalogue=str(catalogue)), progress=False)


def test_cli_reports_in_one_line(manifest, tmp_path, capsys):
    args = ["prepare", "--manifest", str(manifest[0]), "--catalogue", str(CATALOGUE)]
    assert main([*args, "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    assert "recordings" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "p"), "--shard", "2/2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "animalclap-train: error: --shard '2/2': need 0 <= i < N"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("file,species_id\nx.wav,a\n")
    assert (
        main(["prepare", "--manifest", str(bad), "--catalogue", str(CATALOGUE), "--out", "x"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing column(s) path or url" in err
    assert main(["prepare", "--out", str(tmp_path / "never"), "--finalize"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no plan.json (not a prepare output" in err


def test_pcm16_crops_are_the_float_crops_samples_and_collate_to_the_same_batch(
    manifest, prepared, tmp_path
):
    from training.pretrain.data import Collate

    class _Tok:
        def __call__(self, texts, **kw):
            ids = torch.ones((len(texts), 3), dtype=torch.long)
            return {"input_ids": ids, "attention_mask": ids}

    out = tmp_path / "wav"
    prepare(_cfg(manifest[0], out, codec="wav"), progress=False)
    for data in (open_labelled(str(prepared[0])), open_labelled(str(out))):
        n, read_as_int = 48_000, 0
        floats, ints = [], []
        for it in data.items:
            f = data.crop(it, n, np.random.default_rng(5))
            i = data.crop(it, n, np.random.default_rng(5), pcm16=True)
            assert f.dtype == np.float32
            if i.dtype == np.int16:  # read in part: the same samples, unscaled
                read_as_int += 1
                np.testing.assert_array_equal(i.astype(np.float32) / 32768, f, err_msg=it.id)
            else:  # short clips are repeat-padded from a full decode, as float
                np.testing.assert_array_equal(i, f, err_msg=it.id)
            floats.append((f, "a"))
            ints.append((i, "a"))
        assert read_as_int >= len(data.items) // 2
        for int16 in (True, False):
            a, b = Collate(_Tok(), int16=int16)(floats), Collate(_Tok(), int16=int16)(ints)
            assert torch.equal(a["wave"], b["wave"]) and a["wave"].dtype == b["wave"].dtype


@pytest.mark.parametrize("codec", ["flac", "wav"])
def test_crops_read_straight_into_the_batch_are_the_collated_crops(
    codec, manifest, prepared, tmp_path, monkeypatch
):
    """EpochPlanDataset.__getitems__ (what the DataLoader calls) reads each crop into
    its batch row: the same batch, to the sample, as collating crops read one by one,
    in the main process and across a worker boundary."""
    from animalclap_edge.contracts.prompts import ALL_TEMPLATES
    from training.pretrain import data as loader_data
    from training.pretrain.data import Collate, EpochPlanDataset, RankBatches

    class _Tok:
        def __call__(self, texts, **kw):
            ids = torch.ones((len(texts), 3), dtype=torch.long)
            return {"input_ids": ids, "attention_mask": ids}

    folder = prepared[0]
    if codec == "wav":
        folder = tmp_path / "wav"
        prepare(_cfg(manifest[0], folder, codec="wav"), progress=False)
    data = open_labelled(str(folder))
    converted = []
    write_row = loader_data.write_row
    monkeypatch.setattr(loader_data, "write_row", lambda *a: converted.append(1) or write_row(*a))
    for pcm16 in (True, False):
        ds = EpochPlanDataset(
            data, data.items, list(ALL_TEMPLATES), False, 0, 2, 72_000, pcm16=pcm16
        )  # 1.5 s crops: 8 of the 21 recordings are shorter (repeat-padded, converted)
        collate = Collate(_Tok(), int16=pcm16)
        keys = [(1, p) for p in range(len(ds))]
        converted.clear()
        direct = collate(ds.__getitems__(keys))
        if pcm16:  # both: read straight in, and short clips' float crops converted
            assert 0 < len(converted) < len(keys)
        else:  # a float row takes every crop as it is, repeat-padded ones included
            assert not converted
        one_by_one = Collate(_Tok(), int16=pcm16)([ds[k] for k in keys])
        assert direct["wave"].dtype == (torch.int16 if pcm16 else torch.float32)
        assert torch.equal(direct["wave"], one_by_one["wave"])
        assert torch.equal(direct["input_ids"], one_by_one["input_ids"])
        other = Collate(_Tok(), int16=not pcm16)
        if pcm16:  # int16 rows hold rounded float crops: refused, not widened
            with pytest.raises(ValueError, match="build both from one wire_int16"):
                other(ds.__getitems__(keys))
        else:  # float rows narrowed as Collate narrows float crops
            assert torch.equal(
                other(ds.__getitems__(keys))["wave"], other([ds[k] for k in keys])["wave"]
            )
    sampler = RankBatches(1, len(keys), 0, 1, 1, 2)  # epoch 1's only step
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=sampler, num_workers=1, collate_fn=collate
    )
    (from_worker,) = list(loader)
    assert torch.equal(from_worker["wave"], one_by_one["wave"])


def test_a_worker_crops_through_the_table_alone_and_gets_the_items_crops(
    manifest, prepared, tmp_path
):
    """EpochPlanDataset crops through a ClipTable (arrays), so a loader worker touches
    none of the index's per-record objects (at paper scale it copied them page by page):
    the same batches as cropping item by item, with the items and their loaders gone."""
    from dataclasses import replace

    from animalclap_edge.contracts.prompts import ALL_TEMPLATES
    from training.pretrain.data import EpochPlanDataset

    folder = tmp_path / "wav"
    prepare(_cfg(manifest[0], folder, codec="wav"), progress=False)
    for data in (open_labelled(str(prepared[0])), open_labelled(str(folder))):
        for pcm16 in (True, False):
            by_item = EpochPlanDataset(
                replace(data, loads_files=False),
                data.items,
                list(ALL_TEMPLATES),
                False,
                0,
                2,
                72_000,
                pcm16=pcm16,
            )  # 1.5 s crops: short recordings repeat-padded from a full decode
            assert by_item.table is None
            by_row = EpochPlanDataset(
                data, data.items, list(ALL_TEMPLATES), False, 0, 2, 72_000, pcm16=pcm16
            )
            assert by_row.table is not None
            keys = [(1, p) for p in range(len(by_row))]
            by_row.items = None  # what a worker must not need
            by_row.data = replace(data, items=[], load=None, file_of=None)
            want, got = by_item.__getitems__(keys), by_row.__getitems__(keys)
            assert torch.equal(got.wave, want.wave) and got.prompts == want.prompts
            for k in keys[:6]:
                a, b = by_item[k], by_row[k]
                np.testing.assert_array_equal(b[0], a[0])
                assert b[0].dtype == a[0].dtype and b[1] == a[1]


def test_a_prepare_that_keeps_nothing_fails_and_says_where_to_look(tmp_path):
    """It exited 0, and pretraining on the empty folder then blamed the split."""
    import csv

    from training.labelled_audio import open_labelled

    reasons = _planted(tmp_path)
    bad = [name for name in ("silent.wav", "short.wav", "notes.wav")]
    species = next(csv.DictReader(CATALOGUE.open()))["id"]
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(
            f, fieldnames=["path", "species_id", "licence", "date", "site", "quality"]
        )
        w.writeheader()
        for name in bad:
            w.writerow({"path": name, "species_id": species, "licence": "CC0",
                        "date": "2024-06-01", "site": name, "quality": "C"})  # fmt: skip
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"no recording was kept \(1 ") as e:
        prepare(_cfg(manifest, out), progress=False)
    assert f"see {out / 'report.md'}" in str(e.value)
    for name in bad:
        assert reasons[name] in (out / "report.md").read_text()
    with pytest.raises(ValueError, match=r"holds no recordings .*report\.md"):
        open_labelled(str(out))
    # every row left out before decoding: the hint names the column that did it
    with pytest.raises(ValueError, match="check the quality column against --quality"):
        prepare(_cfg(manifest, tmp_path / "q", qualities=["A"]), progress=False)


def test_a_failing_shard_stops_the_run_without_hanging_on_the_others_progress(tmp_path):
    """One worker's real error left the others blocked on a full progress pipe: the
    run hung for good instead of stopping (found in review). A real pool: shard 0 cannot
    be finished (its index path is a folder), shard 1 rejects 9,000 missing files
    (81 kB of progress ticks, more than a pipe holds) while the run stops."""
    import subprocess
    import sys

    shards = tmp_path / "shards"
    (shards / "shard-000000.json" / "blocker").mkdir(parents=True)
    script = f"""
from pathlib import Path
from training.prepare.manifest import SourceRecording
from training.prepare.run import PrepareConfig, _run_shards

def rec(i):
    return SourceRecording(f"k{{i:05d}}", "{tmp_path}/none/%d.wav" % i, "sp", "CC0", "", "")

if __name__ == "__main__":
    cfg = PrepareConfig(manifest="m", catalogue="c", out="{tmp_path}", workers=2)
    _run_shards({{0: [rec(0)], 1: [rec(i) for i in range(1, 9001)]}}, Path("{shards}"), cfg, False)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "shard-000000.json" in done.stderr
    assert (shards / "shard-000001.json").is_file()  # the running shard finished, kept


def test_an_output_planned_under_the_old_keys_says_so(manifest, tmp_path):
    """Ids like 'XC.1' are keyed otherwise since 2026-11-27: resuming a folder planned
    before was refused as 'another manifest or catalogue', which neither was."""
    rows = list(csv.DictReader(manifest[0].open()))[:2]
    rows = [{**r, "id": f"XC.{i}"} for i, r in enumerate(rows)]
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "old"
    prepare(_cfg(path, out), progress=False)
    plan = json.loads((out / "plan.json").read_text())
    del plan["key_scheme"]
    plan["digest"] = "planned-with-old-keys"  # what the old scheme's keys hashed to
    (out / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ValueError, match="was planned before 2026-11-27, when manifest ids"):
        prepare(_cfg(path, out), progress=False)


def test_background_species_reach_the_records_and_keep_unseen_ones_out_of_training(
    manifest, prepared, tmp_path, capsys
):
    """A manifest's background species (xeno-canto's "also", saved as a Python list
    literal of scientific names here) are kept as catalogue ids in records.jsonl, read
    back with the items, and the split leaves out of train and val every recording in
    which an unseen species calls. A name no catalogue species has is warned of, at
    planning and in the report: the list literal's were, once, all of them."""
    from training.splits import ZeroShotSplit

    catalogue = {r["id"]: r for r in csv.DictReader(CATALOGUE.open())}
    before = ZeroShotSplit.from_json(prepared[0] / "split.json")
    unseen = before.test_species[0]
    # it calls behind a seen species of a genus with no test species, which so loses its
    # recordings without any test species losing its genus
    test_genera = {catalogue[t]["genus"] for t in before.test_species}
    rows = list(csv.DictReader(manifest[0].open()))
    host = next(
        r["species_id"]
        for r in rows
        if r["species_id"] in before.seen_species
        and catalogue[r["species_id"]]["genus"] not in test_genera
    )
    for r in rows:
        if r["species_id"] == host:
            r["also"] = f"['{catalogue[unseen]['scientific_name'].upper()}', 'Nonexistent bird']"
    path = manifest[0].parent / "with_also.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "also"
    report = prepare(_cfg(path, out), progress=False)["report"]
    records = [json.loads(line) for line in (out / "records.jsonl").open()]
    heard = [r for r in records if r["species_id"] == host]
    assert heard and all(r["background_species"] == [unseen, "Nonexistent bird"] for r in heard)
    # the report counts the recordings kept; the warning at planning, the rows named
    named = sum(1 for r in rows if r.get("also"))
    assert report["background_not_in_catalogue"] == {"Nonexistent bird": len(heard)}
    said = capsys.readouterr().out
    assert (
        f"prepare: warning: 1 background species name(s) in {named} recording(s) match no "
        "catalogue id, scientific or common name ('Nonexistent bird'): "
    ) in said
    assert f"warning: 1 background species name(s) in {len(heard)} recording(s)" in said
    assert (
        f"**Warning**: 1 background species names, in {len(heard)} recordings, match no "
        "catalogue id"
    ) in (out / "report.md").read_text()

    data = open_labelled(str(out))
    by_key = {r["key"]: tuple(r["background_species"]) for r in records}
    assert all(it.background == by_key[it.id] for it in data.items)
    split = ZeroShotSplit.from_json(out / "split.json")
    assert unseen in split.test_species
    test = set(split.test_species)
    assert not [i for i in split.train + split.val if test & set(data.items[i].background)]
    assert len(split.heard_unseen) == report["split"]["recordings"]["heard_unseen"] > 0
    assert "left out for an unseen species in the background" in (out / "report.md").read_text()


def test_recordings_of_one_site_and_day_stay_on_one_side_when_dates_carry_a_time(
    manifest, tmp_path
):
    """A date column with times (a Parquet timestamp, GBIF's eventDate, "2024-06-01
    06:30") made every recording its own group: same-day recordings of a site were
    split between train and val."""
    import csv

    rows = list(csv.DictReader(manifest[0].open()))
    for i, r in enumerate(rows):
        sep = "T" if i % 2 else " "
        r["site"], day = f"site{i % 5}", f"2024-06-0{i % 4 + 1}"  # 20 site-days
        r["date"] = f"{day}{sep}{5 + i % 12:02d}:{(7 * i) % 60:02d}:00"
        r["path"] = str(manifest[0].parent / r["path"]) if "://" not in r["path"] else r["path"]
    path = tmp_path / "timed.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "out"
    prepare(_cfg(path, out, per_shard=50), progress=False)
    records = [json.loads(line) for line in (out / "records.jsonl").open()]
    split = json.loads((out / "split.json").read_text())
    side = {}
    for name in ("train", "val"):
        for i in split[name]:
            side.setdefault((records[i]["site"], records[i]["date"][:10]), set()).add(name)
    assert split["val"] and all(len(s) == 1 for s in side.values()), side
    assert records[0]["date"][10:] != ""  # the time is kept in the records


def test_workers_default_to_the_cores_this_job_may_use(monkeypatch):
    """A scheduler (Slurm, taskset, a cgroup cpuset) gives a job a few of a node's cores:
    counting the node's cores started one decoding process per node core on them."""
    import os

    import training.prepare.run as run

    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 7, 9, 12}, raising=False)
    if hasattr(os, "process_cpu_count"):
        monkeypatch.setattr(os, "process_cpu_count", lambda: 4)
    assert PrepareConfig(manifest="m", catalogue="c", out="o").workers == 4
    seen = []
    monkeypatch.setattr(run, "prepare", lambda cfg: seen.append(cfg) or {"report": None,
                        "done_here": 0, "present": 0, "shards": 0})  # fmt: skip
    assert main(["prepare", "--manifest", "m", "--catalogue", "c", "--out", "o"]) == 0
    assert seen[0].workers == 4
    main(["prepare", "--manifest", "m", "--catalogue", "c", "--out", "o", "--workers", "2"])
    assert seen[1].workers == 2


def _poisoned_prepare(tmp_path, n: int, poison: str, main: str, others: str = "pass"):
    """n tone recordings r0..r{n-1}.wav and a script that writes shards of them with
    `training.prepare.run.load_source` poisoned for r4.wav (`poison`: the statement run
    instead of decoding it; `others`, run before decoding any other). At the top level
    of the script: spawned workers import it too, so they get the poison. Returns the
    script's path; `main` is its __main__."""
    t = np.arange(SR * 3 // 2) / SR
    for i in range(n):
        sf.write(tmp_path / f"r{i}.wav", 0.2 * np.sin(2 * np.pi * (500 + 100 * i) * t), SR)
    script = tmp_path / "run_poisoned.py"
    script.write_text(f"""
import os, sys, time
from pathlib import Path
import training.prepare.run as run
from training.prepare.manifest import SourceRecording

real = run.load_source

def load_source(uri, settings):
    if uri.endswith("r4.wav"):
        {poison}
    {others}
    return real(uri, settings)

run.load_source = load_source

def rec(i):
    return SourceRecording(f"k{{i}}", "{tmp_path}/r%d.wav" % i, "sp", "CC0", "", "")

if __name__ == "__main__":
{main}
""")
    return script


def test_a_recording_that_kills_its_decoding_process_is_left_out_and_the_run_goes_on(
    tmp_path,
):
    """A worker killed while decoding (the OOM killer on a six-hour recording, a
    decoder crash) broke the pool: the run stopped with a BrokenProcessPool traceback,
    and every rerun died again on the same recording. The run now redoes the shards
    that were being written, each alone, and leaves out the recording its process dies
    on, counted with its reason."""
    import subprocess
    import sys

    from training.prepare.decode import CRASHED
    from training.prepare.shards import read_index

    shards = tmp_path / "shards"
    script = _poisoned_prepare(
        tmp_path,
        9,
        "os.kill(os.getpid(), 9)",
        f"""
    cfg = run.PrepareConfig(manifest="m", catalogue="c", out="{tmp_path}", workers=2)
    work = {{j: [rec(i) for i in range(3 * j, 3 * j + 3)] for j in range(3)}}
    if sys.argv[1:] == ["one"]:  # a job with one shard left: a rerun after a failure
        work = {{1: work[1]}}
    run._run_shards(work, Path("{shards}"), cfg, False)""",
    )
    # a rerun of the shard alone died in the main process, as it was written in-process
    one = subprocess.run(
        [sys.executable, str(script), "one"], capture_output=True, text=True, timeout=300
    )
    assert one.returncode == 0, one.stderr[-2000:]
    assert [r["key"] for r in read_index(shards / "shard-000001.json")["rejected"]] == ["k4"]
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    indexes = [read_index(shards / f"shard-00000{j}.json") for j in range(3)]
    kept = sorted(r["key"] for idx in indexes for r in idx["records"])
    assert kept == [f"k{i}" for i in range(9) if i != 4]
    assert [(r["key"], r["reason"]) for r in indexes[1]["rejected"]] == [("k4", CRASHED)]
    assert "r4.wav" in done.stdout + done.stderr  # said as it happens, not only counted
    assert not list(shards.glob("*.tmp"))


def test_a_recording_that_hangs_its_decoder_is_left_out_after_the_timeout(tmp_path):
    """A decoder stuck on one pathological file (or a read from a hung network mount)
    held its shard, and the run, for ever. Its process is now stopped when a recording
    takes longer than --record-timeout, and the recording is left out, counted: at
    once, not after its shard, redone alone, hung on it a second time."""
    import subprocess
    import sys

    from training.prepare.decode import CRASHED
    from training.prepare.shards import read_index

    shards = tmp_path / "shards"
    # stuck, as a decoder in a C loop: no exception ever comes
    script = _poisoned_prepare(
        tmp_path,
        6,
        f"open('{tmp_path}/hangs', 'a').write('x'); time.sleep(600)",
        f"""
    cfg = run.PrepareConfig(
        manifest="m", catalogue="c", out="{tmp_path}", workers=2, record_timeout_s=2.0
    )
    work = {{j: [rec(i) for i in range(2 * j, 2 * j + 2)] for j in range(3)}}
    run._run_shards(work, Path("{shards}"), cfg, False)""",
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    indexes = [read_index(shards / f"shard-00000{j}.json") for j in range(3)]
    kept = sorted(r["key"] for idx in indexes for r in idx["records"])
    assert kept == ["k0", "k1", "k2", "k3", "k5"]
    assert [(r["key"], r["reason"]) for r in indexes[2]["rejected"]] == [("k4", CRASHED)]
    assert done.stdout.count("r4.wav made no progress in 2 s (--record-timeout)") == 1
    assert (tmp_path / "hangs").read_text() == "x"  # the timeout waited out once
    assert not list(shards.glob("*.tmp"))


def test_with_one_worker_a_recording_that_kills_or_hangs_its_decoder_is_left_out_too(
    tmp_path,
):
    """--workers 1 decoded in the main process: a recording that killed it took the
    run with it (on every rerun), and one that hung its decoder hung the run for ever,
    --record-timeout unheard. It now decodes in a pool of one process, as --workers N."""
    import subprocess
    import sys

    from training.prepare.decode import CRASHED
    from training.prepare.shards import read_index

    shards = tmp_path / "shards"
    script = _poisoned_prepare(
        tmp_path,
        5,
        "os.kill(os.getpid(), 9)",
        f"""
    cfg = run.PrepareConfig(
        manifest="m", catalogue="c", out="{tmp_path}", workers=1, record_timeout_s=2.0
    )
    work = {{0: [rec(0), rec(4), rec(1)], 1: [rec(2), rec(3)]}}
    run._run_shards(work, Path("{shards}"), cfg, False)""",
        others='if uri.endswith("r1.wav"): time.sleep(600)',
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    indexes = [read_index(shards / f"shard-00000{j}.json") for j in range(2)]
    assert sorted(r["key"] for idx in indexes for r in idx["records"]) == ["k0", "k2", "k3"]
    assert [(r["key"], r["reason"]) for r in indexes[0]["rejected"]] == [
        ("k4", CRASHED),
        ("k1", CRASHED),
    ]
    assert "r4.wav killed its decoding process" in done.stdout
    assert "r1.wav made no progress in 2 s (--record-timeout)" in done.stdout
    assert not list(shards.glob("*.tmp"))


def test_ctrl_c_while_shards_are_redone_stops_them_and_leaves_no_recording_out(tmp_path):
    """Ctrl-C during the redo after a worker's death ended the main thread only: the
    redo threads went on (the interpreter joins them at exit), writing their shards
    to the end, and a death the stop caused would have left out an innocent recording
    as "killed its decoding process" in a shard then complete."""
    import signal
    import subprocess
    import sys
    import time

    shards = tmp_path / "shards"
    script = _poisoned_prepare(
        tmp_path,
        6,
        "os.kill(os.getpid(), 9)",
        f"""
    import signal  # Ctrl-C as a terminal delivers it: a job started in the background
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (CI) inherits it ignored
    cfg = run.PrepareConfig(manifest="m", catalogue="c", out="{tmp_path}", workers=2)
    work = {{0: [rec(0), rec(1)], 1: [rec(4), rec(5)]}}
    run._run_shards(work, Path("{shards}"), cfg, False)""",
        others="time.sleep(15)",
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        for line in proc.stdout:  # the redo has begun once r4's death is told
            if "r4.wav killed its decoding process" in line:
                break
        t0 = time.monotonic()
        # the death was seen when it happened, not when shard 0's process returned its
        # 30 s shard: the pool's manager thread watches every process (see _pool_pass)
        assert t0 - started < 20, t0 - started
        proc.send_signal(signal.SIGINT)  # the main process only, as `kill -INT` does
        proc.wait(timeout=60)
        stopped_in = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert stopped_in < 10, stopped_in  # not after shard 0's 30 s of recordings
    assert not (shards / "shard-000000.json").exists()  # left for the rerun, whole


def test_shards_a_death_broke_are_redone_side_by_side(tmp_path, monkeypatch):
    """A process death redid the shards it broke one at a time, each in one process:
    an OOM kill among 32 workers cost the other 31 shards' time over, serially. They
    are now redone side by side, each in a pool of its own (where a death is still its
    own recording's), up to `workers` at once."""
    import threading
    import time

    from training.prepare import run

    lock, running, most = threading.Lock(), [0], [0]

    def pool_pass(work, folder, cfg, workers, bar, crashed, stop=None):
        if workers > 1:  # the first pass: a death broke the four shards begun
            return set(), {j: 0 for j in work}, set()
        (j,) = work
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return {j}, {}, set()

    monkeypatch.setattr(run, "_pool_pass", pool_pass)
    cfg = run.PrepareConfig(manifest="m", catalogue="c", out=str(tmp_path), workers=3)
    run._run_shards({j: ["a recording"] for j in range(4)}, tmp_path, cfg, False)
    assert most[0] == 3  # as many as the workers asked for, not one


def test_failed_downloads_are_retried_on_a_rerun_when_asked(manifest, tmp_path, capsys):
    """A server down for an hour, a rate limit: the rows it served were 'download
    failed' for good, as a rerun found every shard written and redid nothing."""
    import csv

    root = tmp_path / "www"
    root.mkdir()
    t = np.arange(2 * SR) / SR
    sf.write(root / "late.wav", 0.2 * np.sin(2 * np.pi * 1500 * t), SR)

    class Flaky(http.server.SimpleHTTPRequestHandler):
        status = 503

        def log_message(self, *args):
            pass

        def do_GET(self):
            if Flaky.status != 200:
                self.send_error(Flaky.status)
            else:
                super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Flaky, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    rows = list(csv.DictReader(manifest[0].open()))[:3]
    for r in rows:
        r["path"] = str(manifest[0].parent / r["path"])
    rows += [{**rows[0], "path": f"{url}/late.wav"}, {**rows[0], "path": f"{url}/gone.wav"}]
    # ids fix the key order, so the two downloads land in shards 1 and 2 (keys derived
    # from a URL with a random port put them in one shard on some runs)
    for i, r in enumerate(rows):
        r["id"] = f"r{i}"
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "out"
    cfg = _cfg(path, out, per_shard=2, settings=d.DecodeSettings(retries=1))
    try:
        first = prepare(cfg, progress=False)["report"]
        assert first["rejected"][d.DOWNLOAD] == 2
        # the way back is said where the failures are, not in prepared.json alone
        assert "`--retry-downloads` tries those" in (out / "report.md").read_text()
        Flaky.status = 200  # the server is back; gone.wav is a 404 now
        assert prepare(cfg, progress=False)["done_here"] == 0  # a plain rerun: as before
        capsys.readouterr()
        again = prepare(_cfg(path, out, per_shard=2, settings=cfg.settings,
                             retry_downloads=True), progress=False)  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert again["done_here"] == 2  # the shards that had failed downloads, no other
    assert "download(s) failed" in capsys.readouterr().out
    report = again["report"]
    assert report["recordings"] == first["recordings"] + 1
    assert report["rejected"][d.DOWNLOAD] == 1  # gone.wav: HTTP 404


def test_the_progress_bar_moves_per_recording_with_one_worker(manifest, tmp_path, monkeypatch):
    """With --workers 1, or one shard, the bar moved only when a whole shard was
    written: a shard of 500 long recordings sat at 0% for an hour."""
    import tqdm.auto

    steps = []

    class Bar:
        def __init__(self, *a, **kw):
            pass

        def update(self, n=1):
            steps.append(n)

        def set_postfix(self, **kw):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    prepare(_cfg(manifest[0], tmp_path / "out", per_shard=50), progress=False)
    assert len(steps) > 10 and set(steps) == {1}


def test_a_rerun_leaves_no_partial_shard_of_a_dead_writer_behind(manifest, prepared, tmp_path):
    """A worker orphaned by a kill -9 goes on for up to half a second: it began a shard
    the rerun then found written by itself, and its partial tar stayed in shards/ for
    good (temporaries were cleared only for shards a run was about to write)."""
    import shutil
    import socket
    import subprocess
    import sys

    out = tmp_path / "out"
    shutil.copytree(prepared[0], out)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True, capture_output=True, check=True,
    ).stdout.strip()  # fmt: skip
    partial = out / "shards" / f"shard-000003.tar.{socket.gethostname()}-{gone}.tmp"
    partial.write_bytes(b"partial")
    summary = prepare(_cfg(manifest[0], out), progress=False)
    assert summary["done_here"] == 0 and "report" in summary
    assert not partial.exists()


def test_an_output_planned_by_the_older_rules_says_so(manifest, prepared, tmp_path):
    """Since 2026-11-27 more licence spellings are kept, rows of one file are merged,
    bucket URLs and misquoted rows are left out: a manifest with any such rows plans
    otherwise, and resuming its half-written output was refused as 'another manifest
    or catalogue', which it was not."""
    import shutil

    out = tmp_path / "old"
    shutil.copytree(prepared[0], out)
    plan = json.loads((out / "plan.json").read_text())
    del plan["plan_rules"]
    plan["digest"] = "planned-by-the-old-rules"
    (out / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ValueError, match="planned by an older version") as e:
        prepare(_cfg(manifest[0], out), progress=False)
    assert "another manifest" not in str(e.value)
    plan["digest"] = json.loads((prepared[0] / "plan.json").read_text())["digest"]
    (out / "plan.json").write_text(json.dumps(plan))  # planned alike: resumes as before
    assert prepare(_cfg(manifest[0], out), progress=False)["done_here"] == 0


def test_the_hang_watch_forgets_a_shard_whose_process_moved_on(tmp_path):
    """The watchdog timed each shard from its last recording until it was seen
    finished. A shard that failed (a real error) is never seen finished, and its
    process goes on to a shard already queued: once --record-timeout passed, that
    process was killed with the shard it was writing, which the run promises to
    finish and keep for the rerun. A real pool: shard 0 cannot be finished (its index
    path is a folder); its process then writes shard 2, whose recordings take 1 s each,
    under a 3 s timeout: 3 s after shard 0 ended, it was killed."""
    import subprocess
    import sys

    from training.prepare.shards import read_index

    t = np.arange(SR * 3 // 2) / SR
    for i in range(11):
        sf.write(tmp_path / f"r{i}.wav", 0.2 * np.sin(2 * np.pi * (500 + 100 * i) * t), SR)
    shards = tmp_path / "shards"
    (shards / "shard-000000.json" / "blocker").mkdir(parents=True)
    script = tmp_path / "run_slow.py"
    script.write_text(f"""
import time
from pathlib import Path
import training.prepare.run as run
from training.prepare.manifest import SourceRecording

real = run.load_source

def load_source(uri, settings):
    time.sleep(1.0)
    return real(uri, settings)

run.load_source = load_source

def rec(i):
    return SourceRecording(f"k{{i}}", "{tmp_path}/r%d.wav" % i, "sp", "CC0", "", "")

if __name__ == "__main__":
    cfg = run.PrepareConfig(
        manifest="m", catalogue="c", out="{tmp_path}", workers=2, record_timeout_s=3.0
    )
    work = {{0: [rec(0)], 1: [rec(i) for i in range(1, 6)], 2: [rec(i) for i in range(6, 11)]}}
    run._run_shards(work, Path("{shards}"), cfg, False)
""")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0 and "shard-000000.json" in done.stderr
    assert "BrokenProcessPool" not in done.stderr
    for j, keys in ((1, range(1, 6)), (2, range(6, 11))):
        got = [r["key"] for r in read_index(shards / f"shard-00000{j}.json")["records"]]
        assert got == [f"k{i}" for i in keys]
