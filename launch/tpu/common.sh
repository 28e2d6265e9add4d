# shellcheck shell=bash
# Shared settings and helpers for the Cloud TPU VM scripts in this folder.
# Sourced, never run. See docs/TPU.md for the walkthrough.
#
# Every setting comes from the environment, so one `export` line configures all the scripts:
#
#   TPU_NAME          TPU VM (node) name                         default: talora-tpu
#   TPU_ZONE          zone                                       default: us-central2-b
#   TPU_TYPE          accelerator type (v4-8, v5litepod-8, ...)  default: v4-8
#   TPU_RUNTIME       TPU software version                       default: chosen from TPU_TYPE
#   TPU_PROJECT       Google Cloud project                       default: gcloud's configured one
#   TPU_PROVISIONING  standard | spot | preemptible              default: standard
#   TPU_QUEUED        1: create through a queued resource        default: 0
#   TPU_QR_NAME       queued-resource name                       default: $TPU_NAME-qr
#   TPU_GCS_BUCKET    bucket to mount with gcsfuse on every worker (for a workdir that outlives the VM)
#   TPU_GCS_MOUNT     where it is mounted, relative to the workers' home   default: gcs/$TPU_GCS_BUCKET
#   TPU_POLL_SECONDS  pause between state checks                 default: 30
#   DRY_RUN           1: print the gcloud commands instead of running them
#
# Written for bash 3.2 too (macOS's /bin/bash): no associative arrays, no mapfile, and empty arrays
# are expanded as ${a[@]+"${a[@]}"} because bash < 4.4 calls "${a[@]}" unbound under `set -u`.

TPU_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$TPU_SCRIPTS_DIR/../.." && pwd)"

TPU_NAME="${TPU_NAME:-talora-tpu}"
TPU_ZONE="${TPU_ZONE:-us-central2-b}"
TPU_TYPE="${TPU_TYPE:-v4-8}"
TPU_PROJECT="${TPU_PROJECT:-}"
TPU_PROVISIONING="${TPU_PROVISIONING:-standard}"
TPU_QUEUED="${TPU_QUEUED:-0}"
TPU_QR_NAME="${TPU_QR_NAME:-$TPU_NAME-qr}"
TPU_GCS_BUCKET="${TPU_GCS_BUCKET:-}"
TPU_GCS_MOUNT="${TPU_GCS_MOUNT:-gcs/$TPU_GCS_BUCKET}"
TPU_POLL_SECONDS="${TPU_POLL_SECONDS:-30}"
DRY_RUN="${DRY_RUN:-0}"

# Where the project lives on each worker, relative to the worker's home directory.
REMOTE_REPO="talora_jax"
REMOTE_VENV="talora_venv"

# The JAX pin lives in requirements.txt only; the TPU build must match it, so read it from there.
JAX_VERSION="$(sed -n 's/^jax==\([0-9][0-9.]*\).*/\1/p' "$REPO_ROOT/requirements.txt")"
JAX_TPU_SPEC="jax[tpu]==${JAX_VERSION:?requirements.txt has no jax==X.Y.Z pin}"

# The software image for each TPU generation, as the Cloud TPU docs list them for JAX.
default_runtime() {
  case "$1" in
    v2-* | v3-* | v4-*) echo "tpu-ubuntu2204-base" ;;
    v5litepod-* | v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    *) return 1 ;;
  esac
}
TPU_RUNTIME="${TPU_RUNTIME:-$(default_runtime "$TPU_TYPE" || true)}"

# ------------------------------------------------------------------------------------------- helpers

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

note() {
  printf '[tpu] %s\n' "$*" >&2
}

is_dry_run() {
  [[ "$DRY_RUN" == 1 ]]
}

# One word, quoted for bash: as it is when that is safe, else in single quotes (any ' inside
# becomes '\''), leaving the name of a --flag=value outside them so that it stays readable.
# Used both for the command lines sent to the workers and for printing commands.
shell_quote() {
  local safe='^[A-Za-z0-9_./:=,@%+-]+$' flag='^--?[A-Za-z0-9_.-]+=' q="'\\''"
  if [[ "$1" =~ $safe ]]; then
    printf '%s' "$1"
  elif [[ "$1" =~ $flag ]]; then
    printf '%s' "${BASH_REMATCH[0]}"
    shell_quote "${1#"${BASH_REMATCH[0]}"}"
  else
    printf "'%s'" "${1//\'/$q}"
  fi
}

# Prints a command, quoted so it can be pasted back into a shell, then runs it unless DRY_RUN=1.
run() {
  local word line="+"
  for word in "$@"; do
    line+=" $(shell_quote "$word")"
  done
  printf '%s\n' "$line" >&2
  is_dry_run || "$@"
}

# Flags every gcloud call takes: the zone, and the project when one is set.
gcloud_scope() {
  GCLOUD_SCOPE=(--zone="$TPU_ZONE")
  if [[ -n "$TPU_PROJECT" ]]; then
    GCLOUD_SCOPE+=(--project="$TPU_PROJECT")
  fi
}

# Consumes one provisioning flag (--spot, --preemptible, --queued) for create.sh and train.sh;
# returns 1 for anything else so the caller can go on parsing.
parse_provisioning_flag() {
  case "$1" in
    --spot) TPU_PROVISIONING=spot ;;
    --preemptible) TPU_PROVISIONING=preemptible ;;
    --queued) TPU_QUEUED=1 ;;
    *) return 1 ;;
  esac
}

check_settings() {
  case "$TPU_PROVISIONING" in
    standard | spot | preemptible) ;;
    *) die "TPU_PROVISIONING must be standard, spot or preemptible, not '$TPU_PROVISIONING'" ;;
  esac
  if [[ "$TPU_QUEUED" == 1 && "$TPU_PROVISIONING" == preemptible ]]; then
    die "queued resources take --spot, not --preemptible (Spot VMs replace preemptible TPUs)"
  fi
  [[ -n "$TPU_RUNTIME" ]] || die "no default software version for TPU_TYPE=$TPU_TYPE; set TPU_RUNTIME"
  [[ "$TPU_POLL_SECONDS" =~ ^[0-9]+$ ]] || die "TPU_POLL_SECONDS must be a whole number of seconds"
}

# -------------------------------------------------------------------------------------- TPU state

# The node's state (READY, CREATING, PREEMPTED, ...), or NOT_FOUND. A dry run assumes READY.
tpu_state() {
  local state
  gcloud_scope
  if is_dry_run; then
    run gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_SCOPE[@]}" --format='value(state)'
    echo READY
    return
  fi
  if state="$(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_SCOPE[@]}" \
    --format='value(state)' 2>/dev/null)" && [[ -n "$state" ]]; then
    echo "$state"
  else
    echo NOT_FOUND
  fi
}

# The queued resource's state (WAITING_FOR_RESOURCES, ACTIVE, SUSPENDED, ...), or NOT_FOUND.
qr_state() {
  local state
  gcloud_scope
  if is_dry_run; then
    run gcloud compute tpus queued-resources describe "$TPU_QR_NAME" "${GCLOUD_SCOPE[@]}" \
      --format='value(state.state)'
    echo ACTIVE
    return
  fi
  if state="$(gcloud compute tpus queued-resources describe "$TPU_QR_NAME" "${GCLOUD_SCOPE[@]}" \
    --format='value(state.state)' 2>/dev/null)" && [[ -n "$state" ]]; then
    echo "$state"
  else
    echo NOT_FOUND
  fi
}

# Waits until the node is READY. Returns 1 if it reaches a state it cannot leave on its own.
tpu_wait_ready() {
  local state last=""
  while :; do
    if [[ "$TPU_QUEUED" == 1 ]]; then
      # A queued request can wait for capacity for a long time; the node appears once it is ACTIVE.
      state="$(qr_state)"
      case "$state" in
        ACTIVE) state="$(tpu_state)" ;;
        FAILED | SUSPENDED | NOT_FOUND) note "queued resource $TPU_QR_NAME is $state" && return 1 ;;
      esac
    else
      state="$(tpu_state)"
    fi
    [[ "$state" != "$last" ]] && note "$TPU_NAME: $state"
    last="$state"
    case "$state" in
      READY) return 0 ;;
      PREEMPTED | TERMINATED | STOPPED | STOPPING | DELETING | NOT_FOUND) return 1 ;;
    esac
    sleep "$TPU_POLL_SECONDS"
  done
}

# ------------------------------------------------------------------------------- create / delete

tpu_create() {
  local provisioning=()
  gcloud_scope
  case "$TPU_PROVISIONING" in
    spot) provisioning=(--spot) ;;
    preemptible) provisioning=(--preemptible) ;;
  esac
  if [[ "$TPU_QUEUED" == 1 ]]; then
    # The documented way to get Spot capacity: the request queues until capacity frees up.
    run gcloud compute tpus queued-resources create "$TPU_QR_NAME" "${GCLOUD_SCOPE[@]}" \
      --node-id="$TPU_NAME" --accelerator-type="$TPU_TYPE" --runtime-version="$TPU_RUNTIME" \
      ${provisioning[@]+"${provisioning[@]}"}
  else
    run gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_SCOPE[@]}" \
      --accelerator-type="$TPU_TYPE" --version="$TPU_RUNTIME" \
      ${provisioning[@]+"${provisioning[@]}"}
  fi
}

# Deletes the node (and its queued resource), without asking. Callers ask first where a person is.
tpu_delete() {
  gcloud_scope
  if [[ "$TPU_QUEUED" == 1 ]]; then
    # --force also deletes the node the queued resource holds.
    run gcloud compute tpus queued-resources delete "$TPU_QR_NAME" "${GCLOUD_SCOPE[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_SCOPE[@]}" --quiet
  fi
}

# ---------------------------------------------------------------------------------- on the workers

# Runs a shell command line with bash on every worker at once (or on the workers in $2, e.g. 0).
# The line is sent as it is, so callers quote each word with shell_quote.
on_workers() {
  gcloud_scope
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_SCOPE[@]}" --worker="${2:-all}" --command="$1"
}

# Packs the working tree (tracked files plus untracked ones git does not ignore, so local edits
# travel but virtual environments and run directories do not) into the tarball $1.
pack_repo() {
  local tarball="$1"
  # COPYFILE_DISABLE: macOS tar would otherwise add ._* resource-fork files.
  if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (
      cd "$REPO_ROOT" || exit 1
      git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
          # Skip files deleted from the working tree but still in the index.
          if [[ -e "$f" ]]; then printf '%s\0' "$f"; fi
        done |
        COPYFILE_DISABLE=1 tar -czf "$tarball" --null -T -
    )
  else
    (cd "$REPO_ROOT" && COPYFILE_DISABLE=1 tar -czf "$tarball" --exclude=.git .)
  fi
}

# Copies this checkout to every worker and installs it there (remote_setup.sh does the work).
# Safe to repeat: it unpacks over the previous copy and reuses the virtual environment.
# Each step checks its own status because train.sh calls this where `set -e` does not apply.
install_on_workers() {
  local tmp tarball remote_cmd
  tmp="$(mktemp -d)" || return 1
  tarball="$tmp/talora_jax.tar.gz"
  gcloud_scope
  if ! pack_repo "$tarball" ||
    ! run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:talora_jax.tar.gz" \
      "${GCLOUD_SCOPE[@]}" --worker=all; then
    rm -rf "$tmp"
    return 1
  fi
  rm -rf "$tmp"

  remote_cmd="mkdir -p $REMOTE_REPO && tar -xzf talora_jax.tar.gz -C $REMOTE_REPO && rm talora_jax.tar.gz"
  remote_cmd+=" && bash $REMOTE_REPO/launch/tpu/remote_setup.sh"
  remote_cmd+=" $(shell_quote "--jax=$JAX_TPU_SPEC") $(shell_quote "--venv=$REMOTE_VENV")"
  if [[ -n "$TPU_GCS_BUCKET" ]]; then
    remote_cmd+=" $(shell_quote "--gcs-bucket=$TPU_GCS_BUCKET") $(shell_quote "--gcs-mount=$TPU_GCS_MOUNT")"
  fi
  # The ssh command starts in the worker's home directory, so the relative paths above land there.
  on_workers "$remote_cmd"
}

# A command line that runs "$@" on a worker from the project directory, inside its virtual
# environment. Each argument is quoted, so spaces, quotes and $ reach the program unchanged.
in_project_cmd() {
  local word cmd
  cmd="cd \"\$HOME\"/$REMOTE_REPO && source \"\$HOME\"/$REMOTE_VENV/bin/activate &&"
  for word in "$@"; do
    cmd+=" $(shell_quote "$word")"
  done
  printf '%s\n' "$cmd"
}
