#!/usr/bin/env bash
# Idempotently create the project virtual environment (.venv) with the pinned OpenMMLab stack and
# install mmrefer as a regular wheel (mim cannot see editable installs).
#
#   bash tools/install_env.sh            # or: make install
#
# Also installs the web demo's gradio and its browser test's selenium (requirements/demo.txt) and
# the ONNX export / onnxruntime predictor's packages (requirements/deploy.txt);
# Debian's chromium + chromium-driver for that test come from apt in .ci/run.
# The first run builds mmcv 2.1.0 from source (CPU ops, ~25 min on 2 cores); pip caches the wheel
# so later runs on the same machine take seconds. Never installs torchvision, timm or torchscale.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${MMREFER_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
C="$ROOT/requirements/constraints.txt"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[install] creating $VENV"
    "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# quiet pip that still fails loudly (the local index mirrors print "is ignored" noise)
pipq() {
    local log rc=0
    log=$(mktemp)
    pip install -q "$@" >"$log" 2>&1 || rc=$?
    grep -v -e "is ignored: it is neither" -e "^$" "$log" || true
    rm -f "$log"
    return $rc
}

stamp="$VENV/.mmrefer-deps-$(cat "$ROOT"/requirements/*.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    echo "[install] build tools and torch"
    pipq -c "$C" "setuptools<70" wheel ninja psutil
    pipq torch==2.13.0
    echo "[install] runtime dependencies"
    echo "[install] (pip may say torch wants setuptools>=77: expected, torch runs with it; we keep"
    echo "[install]  setuptools<70 because mmcv's build, openmim and mmengine import pkg_resources)"
    pipq -c "$C" -r requirements/runtime.txt -r requirements/tests.txt
    if ! python -c "import mmcv, mmcv.ops" >/dev/null 2>&1; then
        echo "[install] building mmcv 2.1.0 from source (first time ~25 min; cached afterwards)"
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} pipq -c "$C" --no-build-isolation mmcv==2.1.0
        python -c "import mmcv.ops" || { echo "[install] mmcv build failed" >&2; exit 1; }
    fi
    echo "[install] web demo (gradio) and its browser test's driver (selenium): requirements/demo.txt"
    pipq -c "$C" -r requirements/demo.txt
    echo "[install] ONNX export and the onnxruntime predictor (onnx, onnxruntime, onnxscript): requirements/deploy.txt"
    pipq -c "$C" -r requirements/deploy.txt
    echo "[install] mmdet, mmsegmentation, openmim (no deps: their pins fight the stack)"
    pipq --no-deps mmdet==3.3.0 mmsegmentation==1.2.2 openmim==0.3.9
    # reassert the pins other installs may have moved
    pipq -c "$C" "setuptools<70"
    if python -c "import torchvision" >/dev/null 2>&1; then
        echo "[install] torchvision is installed in $VENV; it breaks transformers here" >&2; exit 1
    fi
    touch "$stamp"
fi
echo "[install] mmrefer (regular wheel install, so that mim finds mmrefer/.mim)"
rm -rf build mmrefer.egg-info
pipq --no-deps --no-build-isolation --force-reinstall .
# the in-tree build leaves metadata that would shadow the installed dist-info from the repo root
rm -rf build mmrefer.egg-info
python -c "import mmrefer, mmcv, mmdet; print('[install] ok: mmrefer', mmrefer.__version__, \
'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__)"
