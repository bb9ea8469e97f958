"""scripts/slurm/*.sbatch without SLURM: syntax, the array's shard arithmetic, the
requeue decision, and the pretraining script end to end through a fake `srun` and
`scontrol` (two one-rank "nodes" on 127.0.0.1, gloo, the cpu_smoke config)."""

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRETRAIN = REPO / "scripts" / "slurm" / "pretrain.sbatch"
PREPARE = REPO / "scripts" / "slurm" / "prepare_array.sbatch"

# srun: drops its own options, runs the command once per node in the background with
# SLURM_NODEID/SLURM_PROCID/SLURM_LOCALID set, exits with the largest exit code
FAKE_SRUN = r"""#!/bin/bash
echo "$*" > "$FAKE_LOG/srun.args"
echo "$PWD" > "$FAKE_LOG/srun.cwd"
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
pids=()
for ((i = 0; i < SLURM_NNODES; i++)); do
    SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 "$@" > "$FAKE_LOG/node$i.log" 2>&1 &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p"; r=$?; [ "$r" -gt "$rc" ] && rc=$r; done
exit $rc
"""

FAKE_SCONTROL = r"""#!/bin/bash
echo "$*" >> "$FAKE_LOG/scontrol.calls"
case "$1 $2" in
"show hostnames") echo 127.0.0.1; echo 127.0.0.1 ;;
"show job") echo "JobId=$3 JobName=animalclap-pretrain"
            echo "   Requeue=${FAKE_REQUEUE:-1} Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0" ;;
"requeue "*) ;;
*) echo "fake scontrol: unsupported $*" >&2; exit 1 ;;
esac
"""


def _venv(tmp_path: Path) -> Path:
    """This interpreter's virtualenv, or a stand-in whose activate puts it on PATH."""
    if sys.prefix != sys.base_prefix and (Path(sys.prefix) / "bin" / "activate").is_file():
        return Path(sys.prefix)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
    return venv


def _fake_slurm(tmp_path: Path, srun: str = FAKE_SRUN) -> tuple[Path, Path]:
    bin_dir, log = tmp_path / "fakebin", tmp_path / "fakelog"
    bin_dir.mkdir()
    log.mkdir()
    for name, text in (("srun", srun), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir, log


def _env(tmp_path: Path, bin_dir: Path, log: Path, **extra: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "TORCHELASTIC_"))
        and k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(
        PATH=f"{bin_dir}:{env['PATH']}",
        FAKE_LOG=str(log),
        SLURM_SUBMIT_DIR=str(REPO),
        ANIMALCLAP_VENV=str(_venv(tmp_path)),
        SLURM_JOB_ID="4242",
        SLURM_NNODES="2",
        SLURM_JOB_NODELIST="node[01-02]",
        SLURM_CPUS_PER_TASK="1",
        OMP_NUM_THREADS="1",
    )
    env.update(extra)
    return env


def _start(args: list, env: dict, cwd: Path) -> subprocess.Popen:
    """`bash args` in a session of its own (a job's processes), its output captured."""
    return subprocess.Popen(
        ["bash", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _run(args: list, env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run a script in a session of its own; on a timeout, SIGTERM it all (torchrun
    passes it to its ranks), then SIGKILL what is left."""
    proc = _start(args, env, cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        out, err = proc.communicate()
        pytest.fail(f"{args[0]} ran past {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _free_port() -> int:
    """A port free here, in the range the script derives from job ids."""
    while True:
        port = random.randrange(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def test_scripts_parse():
    for script in (PRETRAIN, PREPARE):
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, (script.name, done.stderr)


def test_sbatch_header():
    """The options the docs rely on are #SBATCH lines sbatch reads (before the first
    command), not text after it."""
    lines = PRETRAIN.read_text().splitlines()
    first_command = next(
        i for i, line in enumerate(lines) if i and line.strip() and not line.startswith("#")
    )
    header = " ".join(line for line in lines[:first_command] if line.startswith("#SBATCH"))
    for option in ("--signal=TERM@120", "--requeue", "--open-mode=append", "--cpus-per-task="):
        assert option in header, option
    assert "USR1" not in header


def _shard(tmp_path: Path, task: int, first: int, last: int, count: int, step: int = 1):
    env = {
        **os.environ,
        "SLURM_ARRAY_TASK_ID": str(task),
        "SLURM_ARRAY_TASK_MIN": str(first),
        "SLURM_ARRAY_TASK_MAX": str(last),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_TASK_STEP": str(step),
    }
    return subprocess.run(
        ["bash", str(PREPARE), "--print-shard"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("first", "last", "step"),
    [(1, 4, 1), (0, 3, 1), (5, 8, 1), (0, 6, 2), (3, 12, 3)],
    ids=["1-4", "0-3", "5-8", "0-6:2", "3-12:3"],
)
def test_array_shards_cover_0_to_n(tmp_path, first, last, step):
    ids = range(first, last + 1, step)
    specs = []
    for task in ids:
        done = _shard(tmp_path, task, first, last, len(ids), step)
        assert done.returncode == 0, done.stderr
        specs.append(done.stdout.strip())
    assert specs == [f"{i}/{len(ids)}" for i in range(len(ids))]


def test_array_list_with_gaps_is_refused(tmp_path):
    # --array=1,3,7: three tasks between 1 and 7 with no step that reaches each
    done = _shard(tmp_path, 3, 1, 7, 3)
    assert done.returncode != 0 and "give a range" in done.stderr


# srun stand-ins that leave --out as a finished, stopped or failed run would
STOPS = {
    "stopped": 'mkdir -p "$OUT/checkpoints"; echo step-00000007 > "$OUT/checkpoints/latest"; exit 1',
    "failed": "exit 1",
    "finished": 'mkdir -p "$OUT/final"; exit 0',
    "finished-late-signal": 'mkdir -p "$OUT/final"; exit 1',
}


@pytest.mark.parametrize(
    ("srun", "requeue_allowed", "auto", "requeued", "rc"),
    [
        ("stopped", "1", "1", True, 0),
        ("stopped", "0", "1", False, 1),
        ("stopped", "1", "0", False, 1),
        ("failed", "1", "1", False, 1),
        ("finished", "1", "1", False, 0),
        ("finished-late-signal", "1", "1", False, 0),
    ],
)
def test_requeue_only_a_stopped_run(tmp_path, srun, requeue_allowed, auto, requeued, rc):
    """A run that saved a later checkpoint than the job began with, and did not finish,
    is requeued where the job allows it; a failure with no new checkpoint (a rerun would
    fail again) and a finished run are not."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "latest").write_text("step-00000005")
    bin_dir, log = _fake_slurm(tmp_path, "#!/bin/bash\n" + STOPS[srun] + "\n")
    env = _env(
        tmp_path, bin_dir, log, OUT=str(out), FAKE_REQUEUE=requeue_allowed, AUTO_REQUEUE=auto
    )
    done = _run([PRETRAIN], env, tmp_path, timeout=60)
    calls = (log / "scontrol.calls").read_text().splitlines()
    assert ("requeue 4242" in calls) == requeued, (calls, done.stderr)
    assert done.returncode == rc, done.stderr


def _smoke(tmp_path: Path, **extra: str) -> tuple[dict, Path, Path]:
    """(environment, --out, fake SLURM's log folder) of a cpu_smoke run on the tiny
    benchmark, one process a "node", through the fake srun and scontrol."""
    out = tmp_path / "run"
    bin_dir, log = _fake_slurm(tmp_path)
    env = _env(
        tmp_path, bin_dir, log, CONFIG="cpu_smoke", DATA="tiny", OUT=str(out),
        NPROC_PER_NODE="1", **extra,
    )  # fmt: skip
    return env, out, log


def test_pretrain_two_nodes_through_srun(tmp_path):
    """The script as SLURM would run it: fake srun starts it on two "nodes", whose
    torchruns meet at the first node on the job's port and train 3 steps of cpu_smoke
    on gloo; the run finishes (final/, every step logged once) and is not requeued."""
    port = _free_port()  # and a job id that derives it
    job_id = str(70000 + port - 20000)
    env, out, log = _smoke(
        tmp_path, SLURM_JOB_ID=job_id, WORKERS="0", JOIN_TIMEOUT="120", SHUTDOWN_TIMEOUT="5"
    )
    done = _run([PRETRAIN, "--set", "max_steps=3", "tensorboard=false"], env, tmp_path, timeout=240)
    nodes = "\n".join((log / f"node{i}.log").read_text()[-2000:] for i in range(2))
    assert done.returncode == 0, done.stderr + nodes
    assert "finished" in done.stderr
    srun_args = (log / "srun.args").read_text().split()
    assert "--kill-on-bad-exit=1" in srun_args and "--cpus-per-task=1" in srun_args
    assert f"--rdzv-endpoint=127.0.0.1:{port}" in srun_args
    assert (log / "srun.cwd").read_text().strip() == str(REPO)  # cd'd from tmp_path
    assert "requeue" not in (log / "scontrol.calls").read_text()

    assert (out / "final").is_dir()
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "step" in r] == [1, 2, 3]
    assert any("2 rank(s) on cpu" in r.get("note", "") for r in records), records


def _descendants(pid: int) -> list[int]:
    """Every process under `pid` (ranks sit in sessions of their own), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_sigterm_saves_and_requeues(tmp_path):
    """SLURM's --signal=TERM (or its time limit, or pre-emption) signals every process
    of the step: torchrun, ranks, loader workers. The run saves the step it reached,
    torchrun exits 1, and the script requeues the job."""
    env, out, log = _smoke(
        tmp_path, WORKERS="1", RDZV_PORT=str(_free_port()), SHUTDOWN_TIMEOUT="60"
    )
    args = [PRETRAIN, "--set", "max_steps=400", "checkpoint_every=1000", "tensorboard=false"]
    proc = _start(args, env, tmp_path)
    try:
        logged = out / "train_log.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if logged.is_file() and logged.read_text().count('"step"') >= 3:
                break
            time.sleep(0.5)
        else:
            pytest.fail("no step logged in 120 s")
        for pid in _descendants(proc.pid):  # all but (fake) srun itself
            with contextlib.suppress(OSError):
                if b"srun" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        for pid in [*_descendants(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert "srun exit 1" in err, err
    assert "requeue " + env["SLURM_JOB_ID"] in (log / "scontrol.calls").read_text()
    assert proc.returncode == 0, err
    assert not (out / "final").exists()
    step = (out / "checkpoints" / "latest").read_text()
    records = [json.loads(line) for line in logged.read_text().splitlines()]
    assert "stopped at step" in records[-1]["note"] and step in records[-1]["note"]
