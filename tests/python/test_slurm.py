"""A sweep as a Slurm array on a real Slurm: munged, slurmctld and slurmd
(Debian's slurm-wlm and munge, installed by scripts/setup.sh) for one local
node on loopback, configured in a temporary folder and stopped at the end.

scripts/slurm/submit.sh submits the project's own sbatch files as a 4-task
array on the default model plus the merge that depends on it.  One task is
killed with `scancel --signal=KILL` mid-run; while it is down, merge refuses
to run and names its folder; requeued, it resumes and the final merge equals
an unsharded run of the same config.  The daemons run as root (sessions and
CI are root here)."""
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import REPO, assert_same

SLURM = REPO / "scripts" / "slurm"
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "sinfo")
DATA = REPO / "data" / "demo_prompts.jsonl"

# 2 categories x (baseline + 2 layers x 2 strengths) = 10 cells of 2 prompts;
# batch 2 makes each cell a work unit, so shards 0 and 1 hold 3 units each.
CONFIG = f"""\
data:
  unsafe:
    file: {DATA}
    categories: [violence, crime]
  safe:
    file: {DATA}
    categories: [benign]
  fit: 3
  eval: 2
  fit_safe: 6
  seed: 3
layers: [10, 12]
strengths: {{from: 4, to: 8, step: 4}}
generation:
  max_new: 24
  temperature: 0
  batch: 2
"""
SHARDS = 4
UNITS_OF_SHARD1 = 3


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


SLURM_CONF = """\
ClusterName=safesteertest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={dir}/munge/munge.sock
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    def __init__(self, folder, env):
        self.dir, self.env = folder, env

    def run(self, *args, check=True, cwd=None):
        proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              env=self.env, cwd=cwd, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))}: {proc.stderr}\n{self.logs()}")
        return proc.stdout

    def job(self, job_id):
        """scontrol's fields of one job (an array task: ID_TASK)."""
        out = self.run("scontrol", "-o", "show", "job", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_for(self, what, predicate, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")

    def logs(self):
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                         for p in sorted(self.dir.glob("*.log")))


def start(cmd, log, env):
    return subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, env=env)


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the test's Slurm daemons run as root (as in sessions and CI)")
    missing = [p for p in PROGRAMS if not shutil.which(p)]
    assert not missing, f"{missing} not found: scripts/setup.sh installs slurm-wlm and munge"
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "munge", "key"):
        (d / sub).mkdir()
    assert len(str(d / "munge" / "munge.sock")) < 100, "socket path too long for AF_UNIX"
    key = d / "key" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    (d / "key").chmod(0o700)
    ctld_port, slurmd_port = free_ports(2)
    conf = d / "slurm.conf"
    conf.write_text(SLURM_CONF.format(dir=d, ctld_port=ctld_port, slurmd_port=slurmd_port))
    env = dict(os.environ, SLURM_CONF=str(conf))
    cluster, procs = Cluster(d, env), []
    with open(d / "daemons.log", "w") as log:
        try:
            # foreground daemons: their pids are ours to stop
            procs.append(start(["munged", "-F", "-f", f"--socket={d}/munge/munge.sock",
                                f"--key-file={key}", f"--pid-file={d}/munge/munged.pid",
                                f"--log-file={d}/munge.log", f"--seed-file={d}/munge/seed"],
                               log, env))
            cluster.wait_for("munged", (d / "munge" / "munge.sock").exists, 20)
            procs.append(start(["slurmctld", "-D", "-i"], log, env))
            procs.append(start(["slurmd", "-D", "-N", "localhost"], log, env))
            cluster.wait_for("the node to be idle", lambda: cluster.run(
                "sinfo", "-h", "-o", "%T", check=False).strip() == "idle", 60)
            yield cluster
        finally:
            if procs[1:] and procs[1].poll() is None:
                cluster.run("scancel", "--user=root", check=False)
                try:
                    cluster.wait_for("the queue to empty", lambda: not cluster.run(
                        "squeue", "-h", check=False).strip(), 30)
                except AssertionError:
                    pass
            for p in reversed(procs):
                stop(p)


def shard_cells(run, i):
    done = run / f"shard{i}" / "cells_done.txt"
    return done.read_text().split() if done.exists() else []


def test_sweep_array_with_killed_task_merges_equal_to_one_run(slurm, safesteer_bin,
                                                              default_model, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(CONFIG)
    opts = ["--model", default_model, "--threads", "1"]
    # the unsharded run to compare with, alongside the array
    ref = subprocess.Popen([str(safesteer_bin), "sweep", str(cfg), "--out", str(tmp_path / "ref"),
                            "--quiet", *map(str, opts)], stderr=subprocess.PIPE, text=True)
    slurm.env["SAFESTEER"] = str(safesteer_bin)
    array, merge = slurm.run(SLURM / "submit.sh", cfg, "runs", SHARDS, *opts,
                             cwd=tmp_path).split()
    runs = tmp_path / "runs"

    # kill task 1 once its first work unit is done, before its last
    slurm.wait_for("shard 1's first cell", lambda: shard_cells(runs, 1), 150)
    slurm.run("scancel", "--signal=KILL", f"{array}_1")
    slurm.wait_for("task 1 to die", lambda: slurm.job(f"{array}_1")["JobState"]
                   not in ("RUNNING", "COMPLETING"), 30)
    killed_with = shard_cells(runs, 1)
    assert 0 < len(killed_with) < UNITS_OF_SHARD1, "task 1 finished before it was killed"
    assert not (runs / "shard1" / "results.h5").exists()

    # merge refuses while the shard is down, naming it
    early = subprocess.run([str(safesteer_bin), "merge", str(tmp_path / "early"),
                            *(str(runs / f"shard{i}") for i in (1, 0, 2, 3))],
                           capture_output=True, text=True)
    assert early.returncode == 1
    assert f"{runs / 'shard1'}: shard 1/4 is not finished ({len(killed_with)} cells done" \
        in early.stderr, early.stderr
    assert not (tmp_path / "early").exists()

    # requeued (Slurm holds a requeued job ~2 minutes; start it now), it resumes
    slurm.run("scontrol", "requeue", f"{array}_1")
    slurm.run("scontrol", "update", f"JobId={array}_1", "StartTime=now")
    slurm.wait_for("the merge job", lambda: slurm.job(merge)["JobState"] == "COMPLETED", 170)
    for i in range(SHARDS):
        assert slurm.job(f"{array}_{i}")["JobState"] == "COMPLETED"
    log = (tmp_path / f"slurm-safesteer-sweep-{array}_1.out").read_text()
    assert "shard 1/4" in log and "attempt 1," in log and "attempt 2," in log, log
    assert shard_cells(runs, 1)[:len(killed_with)] == killed_with  # kept, not rerun
    assert len(shard_cells(runs, 1)) == UNITS_OF_SHARD1

    assert ref.wait(timeout=150) == 0, ref.stderr.read()
    assert_same(tmp_path / "ref", runs / "merged")


def test_docs_show_the_sbatch_files_verbatim():
    doc = (REPO / "docs" / "sweeps.md").read_text()
    for name in ("sweep.sbatch", "merge.sbatch", "submit.sh"):
        text = (SLURM / name).read_text()
        assert f"```bash\n{text}```" in doc, f"docs/sweeps.md does not show scripts/slurm/{name}"
