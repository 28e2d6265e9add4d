#!/usr/bin/env bash
# Deletes the TPU VM (and its queued resource, with --queued). Anything on its disks is lost:
# copy results off first, or keep the workdir in a mounted bucket (TPU_GCS_BUCKET).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<EOF_USAGE
usage: launch/tpu/delete.sh [--queued] [--yes]

Deletes TPU VM '$TPU_NAME' in $TPU_ZONE (settings as for create.sh).
  --queued  it was created with --queued: delete queued resource '$TPU_QR_NAME' and its node
  --yes     do not ask for confirmation
EOF_USAGE
  exit 2
}

assume_yes=0
for arg in "$@"; do
  case "$arg" in
    --queued) TPU_QUEUED=1 ;;
    -y | --yes) assume_yes=1 ;;
    *) usage ;;
  esac
done

if [[ "$assume_yes" != 1 ]] && ! is_dry_run; then
  read -r -p "Delete TPU VM '$TPU_NAME' in $TPU_ZONE and everything on its disks? [y/N] " answer
  [[ "$answer" == [yY]* ]] || die "not deleted"
fi
tpu_delete
