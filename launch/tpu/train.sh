#!/usr/bin/env bash
# Runs launch/train.py on every worker of the TPU VM and keeps it going through preemptions.
#
# The trainer itself makes this simple: rerun with the same command and it resumes from the newest
# checkpoint in WORKDIR/checkpoints, and on SIGTERM (a Spot/preemptible VM being shut down) it
# saves, prints "SIGTERM: saved step N" and exits 0. So after each run this script asks:
#   - finished?       exit 0 without that line, on a VM that is still READY: done.
#   - preempted?      the VM is PREEMPTED/TERMINATED/gone: recreate it, reinstall, rerun.
#   - interrupted?    the SIGTERM line, or ssh itself failed (exit 255), on a READY VM: rerun.
#   - failed?         any other exit on a READY VM is a real error: stop, rerunning would not help.
# Reruns are bounded by --max-restarts.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# What launch/train.py prints after its SIGTERM save (talora_jax/train/loop.py).
PREEMPTION_LINE="SIGTERM: saved step"
SSH_FAILED=255  # ssh's own exit status: the connection failed or dropped

usage() {
  cat >&2 <<EOF_USAGE
usage: launch/tpu/train.sh [options] CONFIG WORKDIR [OVERRIDE ...]

Runs, on every worker of TPU VM '$TPU_NAME' in $TPU_ZONE:
  python launch/train.py --config=CONFIG --workdir=WORKDIR OVERRIDE...

  CONFIG    a config file of the project, e.g. configs/t5_base.py
  WORKDIR   the run directory on the workers; a relative path is taken from the workers' home
            directory. Checkpoints only survive a preemption if WORKDIR outlives the VM, and a pod
            needs one that every worker can write: use a mounted bucket (TPU_GCS_BUCKET, e.g.
            gcs/BUCKET/runs/t5_base) or a shared filesystem. See docs/TPU.md.
  OVERRIDE  passed on unchanged, e.g. --config.optim.lr_fast=0.1 --config.distributed=True

options:
  --spot | --preemptible | --queued
                     how to recreate the VM after a preemption: the flags given to create.sh
  --max-restarts=N   give up after N reruns (default 20)
  --no-recreate      never delete and recreate the VM; stop if it is preempted
  --log-dir=DIR      where each attempt's output is kept (default \${TMPDIR:-/tmp}/talora_tpu/$TPU_NAME)
EOF_USAGE
  exit 2
}

max_restarts=20
recreate=1
log_dir="${TMPDIR:-/tmp}/talora_tpu/$TPU_NAME"
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage ;;
    --max-restarts=*) max_restarts="${1#*=}" ;;
    --no-recreate) recreate=0 ;;
    --log-dir=*) log_dir="${1#*=}" ;;
    --) shift && positional+=("$@") && break ;;
    -*)
      # Until CONFIG and WORKDIR are known, a dash starts one of our options; after, an override.
      if [[ ${#positional[@]} -ge 2 ]]; then
        positional+=("$1")
      else
        parse_provisioning_flag "$1" || usage
      fi
      ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[[ ${#positional[@]} -ge 2 ]] || usage
[[ "$max_restarts" =~ ^[0-9]+$ ]] || die "--max-restarts takes a whole number"
check_settings

config="${positional[0]}"
workdir="${positional[1]}"
overrides=("${positional[@]:2}")
# A config may carry an argument after a colon (configs/t5_base.py:mpt); the file is before it.
[[ -f "$REPO_ROOT/${config%%:*}" ]] || die "no config file ${config%%:*} in $REPO_ROOT (give it relative to the project root)"

# --- The command line each worker runs. Every word is quoted for the remote shell, except that a
# relative WORKDIR is anchored at the remote "$HOME" (a local ~ would expand to the local home).
case "$workdir" in
  /*) workdir_word="--workdir=$(shell_quote "$workdir")" ;;
  *://*) die "WORKDIR must be a filesystem path on the workers; mount the bucket (TPU_GCS_BUCKET) and use its path" ;;
  *) workdir_word="--workdir=\"\$HOME\"/$(shell_quote "${workdir#./}")" ;;
esac
train_cmd="$(in_project_cmd python launch/train.py "--config=$config") $workdir_word"
for word in ${overrides[@]+"${overrides[@]}"}; do
  train_cmd+=" $(shell_quote "$word")"
done

if is_dry_run; then
  on_workers "$train_cmd"
  exit 0
fi

# --- Make sure the VM is READY before a run; recreate and reinstall it if it was preempted.
ensure_ready() {
  local state how="$TPU_PROVISIONING"
  state="$(tpu_state)"
  case "$state" in
    READY) return 0 ;;
    CREATING | STARTING | RESTARTING | REPAIRING | REIMAGING | UNHIDING)
      tpu_wait_ready && return 0 ;;
    STOPPED | STOPPING)
      # Someone stopped it on purpose; deleting it would throw away its disk.
      die "$TPU_NAME is $state: start it (gcloud compute tpus tpu-vm start) and rerun this script" ;;
  esac
  [[ "$recreate" == 1 ]] || die "$TPU_NAME is $state and --no-recreate was given"
  [[ "$TPU_QUEUED" == 1 ]] && how+=", queued"
  note "$TPU_NAME is $state: recreating it ($how)"
  # A preempted Spot or preemptible TPU cannot be restarted, only deleted and created again.
  if [[ "$state" != NOT_FOUND ]] || [[ "$TPU_QUEUED" == 1 && "$(qr_state)" != NOT_FOUND ]]; then
    tpu_delete || return 1
  fi
  tpu_create || return 1
  tpu_wait_ready || return 1
  install_on_workers
}

# After ssh dropped, the trainers may still be running (and holding the TPU, so a rerun could not
# start). SIGTERM makes them save a checkpoint and exit, exactly as a preemption would.
# The pattern is written [l]aunch so that it does not match the shell running this very line.
stop_leftover_trainers() {
  # shellcheck disable=SC2016  # $(seq 60) is for the workers' shell, not this one
  on_workers 'pkill -TERM -f "[l]aunch/train.py" || true
for _ in $(seq 60); do pgrep -f "[l]aunch/train.py" >/dev/null || exit 0; sleep 5; done
pkill -KILL -f "[l]aunch/train.py" || true'
}

restarts=0
count_restart() {  # $1: what happened
  if [[ "$restarts" -ge "$max_restarts" ]]; then
    die "$1; giving up after $restarts restarts (--max-restarts=$max_restarts). Rerun this script to resume from the last checkpoint."
  fi
  restarts=$((restarts + 1))
  note "$1; restart $restarts of $max_restarts"
}

# Only a TPU that exists gets recreated: a typo in TPU_NAME must not buy a new one.
if [[ "$(tpu_state)" == NOT_FOUND ]] && [[ "$TPU_QUEUED" != 1 || "$(qr_state)" == NOT_FOUND ]]; then
  die "no TPU VM $TPU_NAME in $TPU_ZONE: create it with launch/tpu/create.sh, then run setup.sh"
fi

mkdir -p "$log_dir"
attempt=0
while :; do
  # Recreation fails while there is no capacity; keep trying within the same budget.
  until ensure_ready; do
    count_restart "could not bring $TPU_NAME back"
    sleep "$TPU_POLL_SECONDS"
  done

  attempt=$((attempt + 1))
  log="$log_dir/attempt-$attempt.log"
  note "attempt $attempt; output also in $log"
  set +e
  on_workers "$train_cmd" 2>&1 | tee "$log"
  rc="${PIPESTATUS[0]}"
  set -e
  state="$(tpu_state)"
  saved_on_sigterm=0
  if grep -q "$PREEMPTION_LINE" "$log"; then saved_on_sigterm=1; fi

  if [[ "$state" == READY && "$saved_on_sigterm" == 0 ]]; then
    if [[ "$rc" == 0 ]]; then
      note "training finished; the results are in $workdir on the workers"
      exit 0
    fi
    if [[ "$rc" != "$SSH_FAILED" ]]; then
      note "training exited with status $rc on a healthy VM: not retrying; see $log"
      exit "$rc"
    fi
  fi

  count_restart "run interrupted (exit $rc, $TPU_NAME $state)"
  if [[ "$rc" == "$SSH_FAILED" && "$state" == READY ]]; then
    stop_leftover_trainers || true
  fi
  sleep "$TPU_POLL_SECONDS"
done
