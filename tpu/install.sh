#!/usr/bin/env bash
# Installs tf_oneshot with the TPU build of TensorFlow (run on the TPU VM; on a
# multi-host slice run it on every worker: gcloud ... ssh --worker=all --command=...).
#
# usage: bash ~/tf_oneshot/tpu/install.sh
#   env: SRC (default ~/tf_oneshot), VENV (default ~/venv-oneshot),
#        TF_TPU_VERSION (default 2.20.0), LIBTPU_VERSION (default 0.0.14),
#        SKIP_CHECK=1 to skip the final TPU check (on the workers of a multi-host slice)
#
# PyPI's tensorflow-tpu stops at 2.20, so this pins tensorflow-tpu 2.20 and the
# libtpu it was released against (its metadata asks for libtpu~=0.0.14; later
# libtpu releases follow JAX and are untested with TF 2.20). The package's
# [tpu] extra pins tensorflow-tpu==2.20.* as well, so pip keeps that build.
set -euo pipefail

SRC=${SRC:-$HOME/tf_oneshot}
VENV=${VENV:-$HOME/venv-oneshot}
TF_TPU_VERSION=${TF_TPU_VERSION:-2.20.0}
LIBTPU_VERSION=${LIBTPU_VERSION:-0.0.14}
SKIP_CHECK=${SKIP_CHECK:-0}

[[ -f $SRC/setup.cfg ]] || { echo "install.sh: no tf_oneshot checkout at SRC=$SRC (see tpu/create_vm.sh)" >&2; exit 2; }

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
  sudo apt-get update -qq
  sudo apt-get install -y -qq python3-venv
fi
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "tensorflow-tpu==$TF_TPU_VERSION" "libtpu==$LIBTPU_VERSION"
"$VENV/bin/pip" install -q -e "$SRC[tpu]"

if [[ $SKIP_CHECK == 1 ]]; then
  echo "installed (TPU check skipped). use: source $VENV/bin/activate && tf-oneshot --help"
  exit 0
fi
echo "checking that TensorFlow sees this VM's TPU ..."
"$VENV/bin/python" - <<'PY'
import sys

import tensorflow as tf

from tf_oneshot import distribute
from tf_oneshot.errors import UserError

try:
    strategy = distribute.get_strategy("default", tpu="local")
except UserError as e:
    sys.exit(f"install.sh: {e}")
print(f"TensorFlow {tf.__version__}: {distribute.describe(strategy)}")
PY
echo "installed. use: source $VENV/bin/activate && tf-oneshot --help"
