#!/usr/bin/env bash
# Download, here (with a package index), what the GPU machine lacks for gpu_check.sh: Python 3.12
# manylinux x86_64 wheels of mmengine / mmdet and of their dependencies missing from that
# machine's image (/work/.library/device/KINDS.md lists what it holds: torch, numpy, scipy,
# opencv, matplotlib, transformers, sentencepiece, tokenizers, rich, pyyaml, ... but no
# OpenMMLab package), setuptools<70 (mmcv's setup.py imports pkg_resources), and the mmcv 2.1.0
# source archive (built there with its CUDA ops). The folder is git-ignored and travels with the
# device call through `carry`.
#
#   bash tools/analysis_tools/fetch_gpu_deps.sh [DIR] [--python-version 3.12]
#
# DIR defaults to .gpu_deps in the repository root. Idempotent: files already there are kept.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$ROOT/.gpu_deps
PYVER=3.12
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) PYVER=${2:?--python-version needs a value}; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fetch_gpu_deps.sh: unknown option $1" >&2; exit 2 ;;
        *) DIR=$1; shift ;;
    esac
done
PY=${PYTHON:-python3}
mkdir -p "$DIR"
# pip that fails loudly but without the local index mirrors' "is ignored" noise
pipq() { "$PY" -m pip "$@" 2>&1 | { grep -v -e "is ignored: it is neither" -e '^$' || true; }; }

# one version of each (two versions of a package stop `pip install --target`); the same pins as
# the development environment (requirements/constraints.txt, .venv)
WHEELS=(
    mmengine==0.10.7 mmdet==3.3.0
    addict==2.4.0 yapf==0.43.0 platformdirs==4.14.8 termcolor==3.3.0 terminaltables==3.1.10
    pycocotools==2.0.11 shapely==2.2.0
    setuptools==69.5.1
)
pipq download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" "${WHEELS[@]}"
if [ ! -f "$DIR/mmcv-2.1.0.tar.gz" ]; then
    # pip reads an sdist's metadata by running its setup.py in an isolated build environment;
    # mmcv 2.1.0's imports pkg_resources, which setuptools >= 81 no longer has. PIP_CONSTRAINT
    # reaches the pip that fills that environment.
    BC=$(mktemp); echo 'setuptools<70' >"$BC"
    PIP_CONSTRAINT=$BC pipq download -q --no-deps --no-binary :all: -d "$DIR" mmcv==2.1.0
    rm -f "$BC"
fi
# every wheel once
dups=$(ls "$DIR"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z_' 'a-z-' | sort | uniq -d)
[ -z "$dups" ] || { echo "fetch_gpu_deps.sh: several versions of: $dups in $DIR" >&2; exit 1; }
echo "$DIR: $(ls "$DIR" | wc -l) files, $(du -sh "$DIR" | cut -f1)"
ls -1 "$DIR"
