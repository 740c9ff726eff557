#!/usr/bin/env bash
# Trains the one-shot model on this TPU VM from a flagfile, then scores random
# architectures with it (Bender et al. 2018, §4.1 / §4.2). Rerun the same command
# after a preemption: training resumes from the last checkpoint in MODEL_DIR.
#
# usage (from ~/tf_oneshot on the VM): tpu/train.sh FLAGFILE [extra train flags ...]
#   env: BUCKET (required, gs://...), TPU (default: local; a pod slice: its name),
#        RUN (default: the flagfile's name), MODEL_DIR (default $BUCKET/oneshot/$RUN),
#        DATA_DIR (default $BUCKET/tensorflow_datasets), VENV (default ~/venv-oneshot),
#        SEARCH_FLAGS (flags for `tf-oneshot search`, default "--num_architectures=20000" as in §4.1),
#        SKIP_SEARCH=1 to train only.
# e.g.:  BUCKET=gs://my-bucket tpu/train.sh flags/cifar10.flags
#        BUCKET=gs://my-bucket tpu/train.sh flags/imagenet.flags --train_steps=15000
set -euo pipefail

FLAGFILE=${1:?usage: tpu/train.sh FLAGFILE [extra train flags ...]}
shift
BUCKET=${BUCKET:?set BUCKET=gs://your-bucket}
TPU=${TPU:-local}
RUN=${RUN:-$(basename "$FLAGFILE" .flags)}
MODEL_DIR=${MODEL_DIR:-$BUCKET/oneshot/$RUN}
DATA_DIR=${DATA_DIR:-$BUCKET/tensorflow_datasets}
VENV=${VENV:-$HOME/venv-oneshot}
SEARCH_FLAGS=${SEARCH_FLAGS:---num_architectures=20000}
SKIP_SEARCH=${SKIP_SEARCH:-0}
TF_ONESHOT="$VENV/bin/tf-oneshot"

[[ -f $FLAGFILE ]] || { echo "train.sh: no flagfile $FLAGFILE" >&2; exit 2; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "training into $MODEL_DIR (tensorboard --logdir=$MODEL_DIR) ..."
"$TF_ONESHOT" train --flagfile="$FLAGFILE" --tpu="$TPU" --data_dir="$DATA_DIR" \
  --model_dir="$MODEL_DIR" "$@" 2>&1 | tee "$log"
if grep -q "SIGTERM received" "$log"; then
  echo "train.sh: training was preempted; rerun this command to resume." >&2
  exit 143
fi
[[ $SKIP_SEARCH == 1 ]] && exit 0

echo "scoring architectures with the one-shot model ..."
# `search` appends one JSON line per architecture and resumes when rerun.
# shellcheck disable=SC2086  # SEARCH_FLAGS is a list of flags
"$TF_ONESHOT" search --model_dir="$MODEL_DIR" --data_dir="$DATA_DIR" $SEARCH_FLAGS
echo "results: $MODEL_DIR/search/ (one JSON line per architecture)"
