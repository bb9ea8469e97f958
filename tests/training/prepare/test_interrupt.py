"""`prepare` stopped by a SIGINT to its main process alone (`kill -INT`, `timeout -s
INT`, a scheduler), not to its process group as a terminal's Ctrl-C is."""

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

CATALOGUE = Path(__file__).parents[1] / "data" / "realaudio_catalogue.csv"
SR = 16_000
SHARDS, PER_SHARD = 12, 2


def _slow_prepare(tmp_path: Path) -> tuple[Path, list[str]]:
    """SHARDS * PER_SHARD short tone recordings in a manifest, and a script running
    `animalclap-train prepare` on them with each decode slowed by 0.4 s when SLOW is
    set (at the top level: the spawned workers import it too). Returns the script and
    the command's arguments."""
    species = [r["id"] for r in csv.DictReader(CATALOGUE.open())]
    t = np.arange(SR * 3 // 2) / SR
    rows = []
    for i in range(SHARDS * PER_SHARD):
        path = tmp_path / f"r{i}.wav"
        sf.write(path, 0.2 * np.sin(2 * np.pi * (400 + 50 * i) * t), SR)
        rows.append(
            {
                "path": str(path),
                "species_id": species[i % len(species)],
                "licence": "CC0",
                "date": "2024-06-01",
                "site": f"s{i % 4}",
            }
        )
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    script = tmp_path / "run_slow.py"
    script.write_text("""
import os, sys, time
import training.prepare.run as run

real = run.load_source

def load_source(uri, settings):
    if os.environ.get("SLOW"):
        time.sleep(0.4)
    return real(uri, settings)

run.load_source = load_source

if __name__ == "__main__":
    import signal  # as a terminal delivers it: a job started in the background
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (CI) inherits it ignored
    from training.cli import main
    sys.exit(main(sys.argv[1:]))
""")
    args = [
        "prepare",
        "--manifest",
        str(manifest),
        "--catalogue",
        str(CATALOGUE),
        "--out",
        str(tmp_path / "out"),
        "--per-shard",
        str(PER_SHARD),
        "--workers",
        "2",
    ]
    return script, args


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_stops_the_workers_and_the_rerun_resumes(tmp_path, sig):
    """A SIGINT that reached the main process only stopped the progress bar: the pool's
    exit waited for every queued shard, so the workers wrote all of them (hours at
    scale) before "interrupted" was said, and once the exit hung for good. The workers
    are now stopped at once: no shard begins after the interrupt, those written stay,
    and the rerun writes the rest. SIGTERM, which SLURM's time limit sends to every
    process of the job, killed the run with a "leaked semaphore" line and no word on
    resuming (found in a multi-node dry run): it now takes the same way out."""
    import os

    script, args = _slow_prepare(tmp_path)
    shards = tmp_path / "out" / "shards"
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "SLOW": "1"},
        start_new_session=True,  # its own process group, as a job's
    )
    try:
        deadline = time.monotonic() + 120
        while not list(shards.glob("shard-*.json")):
            assert proc.poll() is None, proc.communicate()[0][-2000:]
            assert time.monotonic() < deadline, "no shard written in 120 s"
            time.sleep(0.05)
        if sig == "SIGINT":
            proc.send_signal(signal.SIGINT)  # the main process only, as `kill -INT` does
        else:
            os.killpg(proc.pid, signal.SIGTERM)  # every process, workers too, as SLURM does
        t0 = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - t0
    finally:
        proc.kill()
    written = len(list(shards.glob("shard-*.json")))
    print(f"exit {proc.returncode} {stopped_in:.2f} s after the {sig}, {written}/{SHARDS} shards")
    assert proc.returncode == 130, output[-2000:]
    assert "interrupted; run the same command again to resume" in output
    assert stopped_in < 60, stopped_in
    # the first shard, and at most the few being written then: 12 without the stop
    assert 1 <= written <= SHARDS // 2, (written, stopped_in, output[-2000:])
    time.sleep(2)  # no worker left behind goes on writing
    assert len(list(shards.glob("shard-*.json"))) == written
    assert not list(shards.glob("*.tmp"))  # abandoned shards leave no partial file

    rerun = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming with the other {SHARDS - written}" in rerun.stdout
    assert len(list(shards.glob("shard-*.json"))) == SHARDS
    records = (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    assert len(records) == SHARDS * PER_SHARD
