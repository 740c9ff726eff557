#!/usr/bin/env bash
# Creates a Cloud TPU VM and copies this package onto it (run on your workstation).
#
# usage: tpu/create_vm.sh [TPU_NAME]
#   env: PROJECT (default: gcloud's), ZONE, ACCELERATOR (v4-8, v5litepod-8, v6e-8, v3-8, ...),
#        RUNTIME (default: the base image for ACCELERATOR), SPOT=1 for a cheaper, preemptible VM.
# e.g.:  ZONE=us-central2-b ACCELERATOR=v4-8 tpu/create_vm.sh oneshot
#
# Then: gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
#         --command='bash ~/tf_oneshot/tpu/install.sh'
set -euo pipefail

TPU_NAME=${1:-${TPU_NAME:-oneshot}}
PROJECT=${PROJECT:-$(gcloud config get-value project 2>/dev/null)}
ZONE=${ZONE:-us-central2-b}
ACCELERATOR=${ACCELERATOR:-v4-8}
SPOT=${SPOT:-0}
SRC=$(cd "$(dirname "$0")/.." && pwd)   # this checkout
DEST=tf_oneshot                          # ~/tf_oneshot on the VM

if [[ -z ${RUNTIME:-} ]]; then
  # We install TensorFlow ourselves (tpu/install.sh), so the VM gets the plain
  # base image of its TPU generation, not a tpu-vm-tf-* image.
  case "$ACCELERATOR" in
    v2-*|v3-*|v4-*) RUNTIME=tpu-ubuntu2204-base ;;
    v5litepod-*|v5e-*) RUNTIME=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME=v2-alpha-tpuv6e ;;
    *) echo "create_vm.sh: no default runtime for ACCELERATOR=$ACCELERATOR; set RUNTIME=..." >&2; exit 2 ;;
  esac
fi
[[ -n $PROJECT ]] || { echo "create_vm.sh: set PROJECT or run 'gcloud config set project ...'" >&2; exit 2; }

spot=()
[[ $SPOT == 1 ]] && spot=(--spot)

echo "creating TPU VM $TPU_NAME ($ACCELERATOR, $RUNTIME) in $PROJECT/$ZONE ..."
gcloud compute tpus tpu-vm create "$TPU_NAME" \
  --project="$PROJECT" --zone="$ZONE" \
  --accelerator-type="$ACCELERATOR" --version="$RUNTIME" "${spot[@]}"

echo "copying $SRC to ~/$DEST on every worker of $TPU_NAME ..."
archive=$(mktemp --suffix=.tar.gz)
trap 'rm -f "$archive"' EXIT
tar -C "$SRC" --exclude=.git --exclude=.venv --exclude='__pycache__' --exclude=runs -czf "$archive" .
gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:~/tf_oneshot.tar.gz" \
  --project="$PROJECT" --zone="$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" --worker=all \
  --command="mkdir -p ~/$DEST && tar -C ~/$DEST -xzf ~/tf_oneshot.tar.gz && rm ~/tf_oneshot.tar.gz"

echo "done. next:"
echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=all --command='bash ~/$DEST/tpu/install.sh'"
