#!/usr/bin/env bash
# Prepares a TFDS dataset once and puts it on GCS, where every TPU run reads it.
#
# usage: tpu/prepare_data.sh cifar10|imagenet2012
#   env: BUCKET (required, gs://...), DATA_DIR (default $BUCKET/tensorflow_datasets),
#        WORK (local scratch, default ~/tfds_build), VENV (default ~/venv-oneshot),
#        MANUAL_DIR (imagenet2012 only: the folder holding ILSVRC2012_img_train.tar and
#        ILSVRC2012_img_val.tar, which ImageNet's licence makes you download yourself)
# e.g.:  BUCKET=gs://my-bucket tpu/prepare_data.sh cifar10
#
# CIFAR-10 takes minutes. ImageNet needs ~150 GB of archives plus ~150 GB of
# records on the local disk of WORK (create the VM with a larger boot disk, or
# build it on a separate CPU VM) and a few hours.
set -euo pipefail

DATASET=${1:?usage: tpu/prepare_data.sh cifar10|imagenet2012}
BUCKET=${BUCKET:?set BUCKET=gs://your-bucket}
DATA_DIR=${DATA_DIR:-$BUCKET/tensorflow_datasets}
WORK=${WORK:-$HOME/tfds_build}
VENV=${VENV:-$HOME/venv-oneshot}
MANUAL_DIR=${MANUAL_DIR:-$WORK/downloads/manual}

case "$DATASET" in
  cifar10|imagenet2012) ;;
  *) echo "prepare_data.sh: unknown dataset $DATASET; use cifar10 or imagenet2012" >&2; exit 2 ;;
esac
if [[ $DATASET == imagenet2012 && ! -f $MANUAL_DIR/ILSVRC2012_img_train.tar ]]; then
  echo "prepare_data.sh: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in MANUAL_DIR=$MANUAL_DIR" >&2
  exit 2
fi

mkdir -p "$WORK"
# Build locally (fast, resumable), then copy: TFDS writes through many small
# appends that are slow on GCS.
"$VENV/bin/tfds" build "$DATASET" --data_dir="$WORK/data" --manual_dir="$MANUAL_DIR"
gcloud storage cp --recursive "$WORK/data/$DATASET" "$DATA_DIR/"
echo "prepared: $DATA_DIR/$DATASET  (pass --data_dir=$DATA_DIR)"
