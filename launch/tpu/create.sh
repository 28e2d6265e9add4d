#!/usr/bin/env bash
# Creates the TPU VM described by the TPU_* settings (see common.sh) and waits until it is READY.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<EOF_USAGE
usage: launch/tpu/create.sh [--spot | --preemptible] [--queued]

Creates TPU VM '$TPU_NAME' ($TPU_TYPE, $TPU_RUNTIME) in $TPU_ZONE; change them with TPU_NAME,
TPU_TYPE, TPU_ZONE, TPU_RUNTIME and TPU_PROJECT (see launch/tpu/common.sh).

  --spot         a Spot VM: much cheaper, can be preempted at any time (train.sh resumes)
  --preemptible  the older preemptible TPU (also preempted at any time, and after 24 hours)
  --queued       request it as a queued resource, which waits for capacity instead of failing;
                 Google's recommended way to get Spot TPUs

Pass the same flags to train.sh so that it recreates the VM the same way after a preemption.
EOF_USAGE
  exit 2
}

for arg in "$@"; do
  case "$arg" in
    -h | --help) usage ;;
    *) parse_provisioning_flag "$arg" || usage ;;
  esac
done
check_settings

tpu_create
tpu_wait_ready || die "$TPU_NAME did not become READY"
note "$TPU_NAME is READY; next: launch/tpu/setup.sh"
