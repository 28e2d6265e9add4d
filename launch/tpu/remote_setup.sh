#!/usr/bin/env bash
# Runs ON each TPU worker; setup.sh copies the project over and starts this with --worker=all.
# Makes a Python >= 3.11 virtual environment, installs requirements.txt and the TPU build of JAX
# into it, and optionally mounts a Cloud Storage bucket for workdirs that must outlive the VM.
# Safe to rerun: each step checks what is already there.
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: remote_setup.sh --jax=SPEC [--venv=DIR] [--gcs-bucket=BUCKET --gcs-mount=DIR]
  --jax=SPEC          the TPU build of JAX to install, e.g. 'jax[tpu]==0.10.2'
  --venv=DIR          virtual environment to create or reuse (relative to $HOME; default talora_venv)
  --gcs-bucket=NAME   Cloud Storage bucket to mount with gcsfuse
  --gcs-mount=DIR     where to mount it (relative to $HOME; default gcs/NAME)
EOF
  exit 2
}

jax_spec="" venv="talora_venv" gcs_bucket="" gcs_mount=""
for arg in "$@"; do
  case "$arg" in
    --jax=*) jax_spec="${arg#*=}" ;;
    --venv=*) venv="${arg#*=}" ;;
    --gcs-bucket=*) gcs_bucket="${arg#*=}" ;;
    --gcs-mount=*) gcs_mount="${arg#*=}" ;;
    *) usage ;;
  esac
done
[[ -n "$jax_spec" ]] || usage
[[ "$venv" == /* ]] || venv="$HOME/$venv"
gcs_mount="${gcs_mount:-gcs/$gcs_bucket}"
[[ "$gcs_mount" == /* ]] || gcs_mount="$HOME/$gcs_mount"

cd "$(dirname "${BASH_SOURCE[0]}")/../.."  # the project root
say() { printf '[%s] %s\n' "$(hostname)" "$*"; }

# --- Python: the pinned jax and numpy need >= 3.11, and the TPU images' Ubuntu 22.04 has 3.10.
python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null &&
    "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [[ ! -x "$venv/bin/python" && -z "$python" ]]; then
  say "installing python3.11 (the system Python is older than 3.11)"
  sudo apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
  python=python3.11
fi

# --- The virtual environment: requirements.txt, then the TPU build of the same JAX version.
if [[ ! -x "$venv/bin/python" ]]; then
  say "creating $venv with $("$python" --version)"
  if ! "$python" -m venv "$venv"; then
    # Ubuntu ships venv's pip bootstrap separately, as the pythonX.Y-venv package.
    version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$version-venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
  fi
fi
say "installing requirements.txt and $jax_spec"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r requirements.txt
"$venv/bin/python" -m pip install --quiet "$jax_spec"
# Importing jax does not start the TPU runtime, so this check is safe on every host of a pod.
say "ready: $("$venv/bin/python" -c 'import jax, flax, orbax.checkpoint; print("jax", jax.__version__)')"

# --- Optional: a bucket mounted as a directory, so checkpoints survive a preempted (deleted) VM
# and every host of a pod sees the same workdir.
if [[ -n "$gcs_bucket" ]]; then
  if ! command -v gcsfuse >/dev/null; then
    say "installing gcsfuse"
    codename="$(lsb_release -c -s)"
    echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$codename main" |
      sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
      sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcsfuse
  fi
  mkdir -p "$gcs_mount"
  if mountpoint -q "$gcs_mount"; then
    say "gs://$gcs_bucket already mounted at $gcs_mount"
  else
    # Orbax commits a checkpoint by renaming its temporary directory. On a bucket without
    # hierarchical namespace, gcsfuse renames a directory only when it holds fewer objects than
    # --rename-dir-limit, so the limit must sit well above a checkpoint's file count.
    gcsfuse --implicit-dirs --rename-dir-limit=200000 "$gcs_bucket" "$gcs_mount"
    say "mounted gs://$gcs_bucket at $gcs_mount"
  fi
fi
