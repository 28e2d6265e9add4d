#!/usr/bin/env bash
# Runs one command on every worker, from the project directory with its virtual environment
# active: downloading data or weights, checking devices, looking at a run.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<EOF_USAGE
usage: launch/tpu/exec.sh [--worker=W] COMMAND [ARG ...]

Runs COMMAND ARG... on every worker of TPU VM '$TPU_NAME' in $TPU_ZONE (or only on worker W: 0,
1-3, ...), in ~/$REMOTE_REPO with ~/$REMOTE_VENV active. Each argument arrives exactly as given:
nothing is expanded on the workers, and relative paths start from ~/$REMOTE_REPO.
  e.g. launch/tpu/exec.sh tfds build glue/mnli glue/sst2
       launch/tpu/exec.sh --worker=0 tfds build glue/mnli --data_dir=gs://BUCKET/tfds
       launch/tpu/exec.sh python -c 'import jax; print(jax.device_count())'
EOF_USAGE
  exit 2
}

worker=all
case "${1:-}" in
  --worker=?*) worker="${1#*=}" && shift ;;
esac
[[ $# -ge 1 && "$1" != -h && "$1" != --help ]] || usage
on_workers "$(in_project_cmd "$@")" "$worker"
