#!/usr/bin/env bash
# Copies this checkout (including uncommitted edits) to every worker of the TPU VM and installs
# it there: a Python >= 3.11 virtual environment with requirements.txt and the TPU build of JAX.
# Rerun it after changing code; train.sh reruns it by itself after recreating a preempted VM.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<EOF_USAGE
usage: launch/tpu/setup.sh

Installs the project on every worker of TPU VM '$TPU_NAME' in $TPU_ZONE, into ~/$REMOTE_REPO
and the virtual environment ~/$REMOTE_VENV. With TPU_GCS_BUCKET set, also mounts that bucket on
every worker, at ~/gcs/BUCKET unless TPU_GCS_MOUNT says otherwise.
EOF_USAGE
  exit 2
}

[[ $# -eq 0 ]] || usage
install_on_workers
note "installed on every worker of $TPU_NAME; next: launch/tpu/train.sh"
