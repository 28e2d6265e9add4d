"""The Cloud TPU scripts in launch/tpu/ build the right gcloud commands.

They cannot reach Google Cloud here, so each test puts a fake ``gcloud`` first on PATH. The fake
records every call and plays a small TPU: a state (READY, PREEMPTED, ...) that create and delete
change, and scripted outcomes for the training runs. The command line sent to the workers is then
run for real by bash in a fake home directory, so its quoting is checked by the shell that will
read it on the workers, not by a Python imitation of one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_DIR = os.path.join(REPO, "launch", "tpu")
SCRIPTS = sorted(f for f in os.listdir(TPU_DIR) if f.endswith(".sh"))
NAME, ZONE = "test-tpu", "europe-west4-a"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

FAKE_GCLOUD = textwrap.dedent('''\
    #!{python}
    """A stand-in for gcloud: records its arguments and simulates one TPU VM."""
    import json, os, sys, tarfile
    here = os.path.dirname(os.path.abspath(__file__))
    args = sys.argv[1:]
    record = {{"args": args}}
    with open(os.path.join(here, "tpu.json")) as f:
        tpu = json.load(f)
    verb = args[2:4]  # e.g. ["tpu-vm", "ssh"] after "compute tpus"
    rc = 0
    if verb == ["tpu-vm", "describe"] or verb == ["queued-resources", "describe"]:
        state = tpu["state"] if verb[0] == "tpu-vm" else tpu.get("qr_state", "NOT_FOUND")
        if state == "NOT_FOUND":
            sys.stderr.write("ERROR: (gcloud) NOT_FOUND\\n")
            rc = 1
        else:
            print(state)
    elif verb[1] == "create":
        tpu["state"] = "READY"
        if verb[0] == "queued-resources":
            tpu["qr_state"] = "ACTIVE"
    elif verb[1] == "delete":
        tpu["state"] = tpu["qr_state"] = "NOT_FOUND"
    elif verb == ["tpu-vm", "scp"] and os.path.isfile(args[4]):
        with tarfile.open(args[4]) as t:
            record["tar_members"] = t.getnames()
    elif verb == ["tpu-vm", "ssh"]:
        command = [a for a in args if a.startswith("--command=")][0]
        if "python launch/train.py" in command:
            run = tpu["runs"].pop(0)
            print(run["out"])
            rc = run["rc"]
            tpu["state"] = run.get("then", tpu["state"])
    with open(os.path.join(here, "calls.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\\n")
    with open(os.path.join(here, "tpu.json"), "w") as f:
        json.dump(tpu, f)
    sys.exit(rc)
''')


class FakeCloud:
    """A directory holding the fake gcloud, the simulated TPU's state and the recorded calls."""

    def __init__(self, root):
        self.bin = os.path.join(root, "bin")
        os.makedirs(self.bin)
        path = os.path.join(self.bin, "gcloud")
        with open(path, "w") as f:
            f.write(FAKE_GCLOUD.format(python=sys.executable))
        os.chmod(path, 0o755)
        self.tmp = os.path.join(root, "tmp")
        os.makedirs(self.tmp)
        self.set_tpu(state="READY")

    def set_tpu(self, **tpu):
        tpu.setdefault("runs", [])
        with open(os.path.join(self.bin, "tpu.json"), "w") as f:
            json.dump(tpu, f)

    def calls(self) -> list[dict]:
        path = os.path.join(self.bin, "calls.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f]

    def verbs(self) -> list[str]:
        """Each call as 'tpu-vm ssh', 'queued-resources create', ..."""
        return [" ".join(c["args"][2:4]) for c in self.calls()]

    def run(self, script, *args, dry_run=False, **env):
        environ = {k: v for k, v in os.environ.items() if not k.startswith("TPU_") and k != "DRY_RUN"}
        environ.update(PATH=self.bin + os.pathsep + environ.get("PATH", ""), TMPDIR=self.tmp,
                       TPU_NAME=NAME, TPU_ZONE=ZONE, TPU_POLL_SECONDS="0", DRY_RUN="1" if dry_run else "0",
                       **env)
        return subprocess.run(["bash", os.path.join(TPU_DIR, script), *args], env=environ,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def cloud(tmp_path):
    return FakeCloud(str(tmp_path))


def _flag(args, name):
    values = [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]
    assert len(values) == 1, (name, args)
    return values[0]


def _pinned_jax():
    with open(os.path.join(REPO, "requirements.txt")) as f:
        return re.search(r"^jax==(\S+)", f.read(), re.M).group(1)


def _run_on_fake_worker(command, home):
    """Runs a worker command line with bash, in a fake home where `python` records its argv."""
    fakebin = os.path.join(home, "fakebin")
    os.makedirs(fakebin)
    os.makedirs(os.path.join(home, "talora_jax"))
    os.makedirs(os.path.join(home, "talora_venv", "bin"))
    with open(os.path.join(home, "talora_venv", "bin", "activate"), "w") as f:
        f.write('PATH="$HOME/fakebin:$PATH"\n')
    with open(os.path.join(fakebin, "python"), "w") as f:
        f.write(f'#!{sys.executable}\nimport json, os, sys\n'
                'json.dump({"argv": sys.argv[1:], "cwd": os.getcwd()}, open(os.path.join(os.environ["HOME"], "argv.json"), "w"))\n')
    os.chmod(os.path.join(fakebin, "python"), 0o755)
    subprocess.run(["bash", "-c", command], env={**os.environ, "HOME": home}, check=True, timeout=30)
    with open(os.path.join(home, "argv.json")) as f:
        return json.load(f)


# ------------------------------------------------------------------------------------ every script


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", os.path.join(TPU_DIR, script)], check=True)


@pytest.mark.parametrize("script,args", [
    ("create.sh", ["--bogus"]),
    ("delete.sh", ["--bogus"]),
    ("setup.sh", ["extra"]),
    ("train.sh", []),
    ("train.sh", ["configs/t5_base.py"]),
    ("exec.sh", []),
])
def test_bad_arguments_print_usage_and_touch_nothing(cloud, script, args):
    result = cloud.run(script, *args)
    assert result.returncode != 0
    assert "usage:" in result.stderr
    assert cloud.calls() == []


# ------------------------------------------------------------------------------------------- train

OVERRIDES = ["--config.data.tasks=mnli,sst2", "--config.optim.lr_fast=0.1",
             """--config.note=it's a "quoted" $HOME *"""]


def test_train_dry_run_prints_the_command_and_runs_nothing(cloud, tmp_path):
    workdir = str(tmp_path / "run dir")
    result = cloud.run("train.sh", "configs/t5_base.py", workdir, *OVERRIDES, dry_run=True)
    assert result.returncode == 0, result.stderr
    assert cloud.calls() == []
    printed = [line for line in result.stderr.splitlines() if line.startswith("+ gcloud")]
    assert len(printed) == 1
    # The printed line is itself valid shell: it splits back into the exact arguments.
    args = shlex.split(printed[0][2:])
    assert args[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", NAME]
    assert _flag(args, "--zone") == ZONE and _flag(args, "--worker") == "all"
    ran = _run_on_fake_worker(_flag(args, "--command"), str(tmp_path / "home"))
    assert ran["argv"] == ["launch/train.py", "--config=configs/t5_base.py", f"--workdir={workdir}", *OVERRIDES]


def test_train_runs_on_every_worker_with_the_arguments_intact(cloud, tmp_path):
    workdir = str(tmp_path / "run dir")
    cloud.set_tpu(state="READY", runs=[{"out": "training done", "rc": 0}])
    result = cloud.run("train.sh", "configs/t5_base.py", workdir, *OVERRIDES)
    assert result.returncode == 0, result.stderr
    ssh = [c["args"] for c in cloud.calls() if c["args"][2:4] == ["tpu-vm", "ssh"]]
    assert len(ssh) == 1
    args = ssh[0]
    assert args[:5] == ["compute", "tpus", "tpu-vm", "ssh", NAME]
    assert args[5:7] == [f"--zone={ZONE}", "--worker=all"]
    command = _flag(args, "--command")
    assert "python launch/train.py --config=configs/t5_base.py --workdir=" in command
    home = str(tmp_path / "home")
    ran = _run_on_fake_worker(command, home)
    assert ran["cwd"] == os.path.join(home, "talora_jax")
    assert ran["argv"] == ["launch/train.py", "--config=configs/t5_base.py", f"--workdir={workdir}", *OVERRIDES]


def test_train_takes_a_relative_workdir_from_the_workers_home(cloud, tmp_path):
    result = cloud.run("train.sh", "configs/t5_base.py", "runs/t5_base", dry_run=True)
    assert result.returncode == 0, result.stderr
    args = shlex.split(next(l for l in result.stderr.splitlines() if l.startswith("+ gcloud"))[2:])
    home = str(tmp_path / "home")
    ran = _run_on_fake_worker(_flag(args, "--command"), home)
    assert ran["argv"][2] == f"--workdir={home}/runs/t5_base"


def test_train_refuses_a_gs_url_and_an_unknown_config(cloud):
    assert "mount the bucket" in cloud.run("train.sh", "configs/t5_base.py", "gs://b/run", dry_run=True).stderr
    assert "no config file" in cloud.run("train.sh", "configs/nope.py", "/tmp/run", dry_run=True).stderr
    assert cloud.calls() == []
    assert cloud.run("train.sh", "configs/t5_base.py:mpt", "/tmp/run", dry_run=True).returncode == 0


def test_train_recreates_a_preempted_spot_vm_and_reruns_the_same_command(cloud):
    cloud.set_tpu(state="READY", runs=[
        {"out": "step 100\nSIGTERM: saved step 100 to /w/checkpoints; rerun the same command to resume.",
         "rc": 0, "then": "PREEMPTED"},
        {"out": "training done", "rc": 0},
    ])
    result = cloud.run("train.sh", "--spot", "configs/t5_base.py", "/w", "--config.distributed=True")
    assert result.returncode == 0, result.stderr
    verbs = cloud.verbs()
    order = [v for v in verbs if v != "tpu-vm describe"]
    assert order == ["tpu-vm ssh", "tpu-vm delete", "tpu-vm create", "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]
    calls = [c["args"] for c in cloud.calls()]
    create = next(a for a in calls if a[2:4] == ["tpu-vm", "create"])
    assert "--spot" in create and _flag(create, "--zone") == ZONE
    train = [_flag(a, "--command") for a in calls if a[3] == "ssh" and "launch/train.py" in _flag(a, "--command")]
    assert len(train) == 2 and train[0] == train[1]  # resuming is rerunning the very same command
    assert "restart 1 of" in result.stderr


def test_train_reruns_on_a_healthy_vm_after_ssh_drops(cloud):
    cloud.set_tpu(state="READY", runs=[{"out": "", "rc": 255}, {"out": "done", "rc": 0}])
    result = cloud.run("train.sh", "configs/t5_base.py", "/w")
    assert result.returncode == 0, result.stderr
    commands = [_flag(c["args"], "--command") for c in cloud.calls() if c["args"][3] == "ssh"]
    assert len(commands) == 3 and "pkill -TERM" in commands[1]  # leftover trainers save and stop
    assert "tpu-vm create" not in cloud.verbs()


def test_train_stops_on_a_real_failure(cloud):
    cloud.set_tpu(state="READY", runs=[{"out": "Traceback ...", "rc": 1}])
    result = cloud.run("train.sh", "configs/t5_base.py", "/w")
    assert result.returncode == 1
    assert cloud.verbs().count("tpu-vm ssh") == 1
    assert "tpu-vm create" not in cloud.verbs()


def test_train_gives_up_after_max_restarts(cloud):
    preempted = {"out": "SIGTERM: saved step 1", "rc": 0, "then": "PREEMPTED"}
    cloud.set_tpu(state="READY", runs=[preempted] * 3)
    result = cloud.run("train.sh", "--max-restarts=2", "configs/t5_base.py", "/w")
    assert result.returncode != 0
    assert "giving up after 2 restarts" in result.stderr
    assert cloud.verbs().count("tpu-vm create") == 2


def test_train_never_creates_a_tpu_that_did_not_exist(cloud):
    cloud.set_tpu(state="NOT_FOUND")
    result = cloud.run("train.sh", "--spot", "configs/t5_base.py", "/w")
    assert result.returncode != 0 and "create.sh" in result.stderr
    assert cloud.verbs() == ["tpu-vm describe"]


# ------------------------------------------------------------------------------- create and delete


@pytest.mark.parametrize("flags,expected", [([], None), (["--spot"], "--spot"), (["--preemptible"], "--preemptible")])
def test_create(cloud, flags, expected):
    cloud.set_tpu(state="NOT_FOUND")
    result = cloud.run("create.sh", *flags, TPU_TYPE="v5litepod-8")
    assert result.returncode == 0, result.stderr
    create = cloud.calls()[0]["args"]
    assert create[:5] == ["compute", "tpus", "tpu-vm", "create", NAME]
    assert _flag(create, "--zone") == ZONE
    assert _flag(create, "--accelerator-type") == "v5litepod-8"
    assert _flag(create, "--version") == "v2-alpha-tpuv5-lite"
    assert [a for a in create if a in ("--spot", "--preemptible")] == ([expected] if expected else [])


def test_create_queued_spot(cloud):
    cloud.set_tpu(state="NOT_FOUND")
    result = cloud.run("create.sh", "--spot", "--queued", TPU_PROJECT="my-project")
    assert result.returncode == 0, result.stderr
    create = cloud.calls()[0]["args"]
    assert create[:5] == ["compute", "tpus", "queued-resources", "create", f"{NAME}-qr"]
    assert _flag(create, "--node-id") == NAME
    assert _flag(create, "--runtime-version") == "tpu-ubuntu2204-base"
    assert _flag(create, "--project") == "my-project"
    assert "--spot" in create


def test_create_refuses_queued_preemptible(cloud):
    result = cloud.run("create.sh", "--queued", "--preemptible")
    assert result.returncode != 0 and "--spot" in result.stderr
    assert cloud.calls() == []


def test_delete_with_yes(cloud):
    result = cloud.run("delete.sh", "--yes")
    assert result.returncode == 0, result.stderr
    assert cloud.calls()[0]["args"] == ["compute", "tpus", "tpu-vm", "delete", NAME, f"--zone={ZONE}", "--quiet"]


# ------------------------------------------------------------------------------------------- setup


def test_setup_copies_the_checkout_and_installs_jax_tpu_on_every_worker(cloud):
    result = cloud.run("setup.sh", TPU_GCS_BUCKET="my-bucket")
    assert result.returncode == 0, result.stderr
    scp, ssh = cloud.calls()
    assert scp["args"][2:4] == ["tpu-vm", "scp"] and _flag(scp["args"], "--worker") == "all"
    assert scp["args"][5] == f"{NAME}:talora_jax.tar.gz"
    members = scp["tar_members"]
    assert "requirements.txt" in members and "launch/tpu/remote_setup.sh" in members
    assert not any(m == ".git" or m.startswith(".git/") for m in members)
    assert ssh["args"][2:5] == ["tpu-vm", "ssh", NAME] and _flag(ssh["args"], "--worker") == "all"
    words = shlex.split(_flag(ssh["args"], "--command"))
    assert "talora_jax/launch/tpu/remote_setup.sh" in words
    assert f"--jax=jax[tpu]=={_pinned_jax()}" in words
    assert "--gcs-bucket=my-bucket" in words


def test_exec_passes_each_argument_unchanged(cloud, tmp_path):
    result = cloud.run("exec.sh", "python", "-c", "print('a b')", dry_run=True)
    assert result.returncode == 0, result.stderr
    args = shlex.split(next(l for l in result.stderr.splitlines() if l.startswith("+ gcloud"))[2:])
    ran = _run_on_fake_worker(_flag(args, "--command"), str(tmp_path / "home"))
    assert ran["argv"] == ["-c", "print('a b')"]


def test_exec_on_one_worker(cloud):
    result = cloud.run("exec.sh", "--worker=0", "tfds", "build", "glue/mnli")
    assert result.returncode == 0, result.stderr
    (call,) = cloud.calls()
    assert _flag(call["args"], "--worker") == "0"
    assert _flag(call["args"], "--command").endswith("tfds build glue/mnli")
