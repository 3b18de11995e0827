#!/usr/bin/env bash
# The quick start (README command 1), run inside the project venv by `make quickstart`:
#   1. generate SynthRef (our synthetic referring dataset in the official file formats);
#   2. `mim train` a tiny Latent-VG and a tiny InstAlign on it (CPU, a few minutes each);
#   3. `mim test` both checkpoints (GRES metrics on SynthRef's gRefCOCO-format val, RIS and REC
#      metrics on its RefCOCO-format val) and draw predictions;
#   4. write a demo picture with the inference API.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=data/synthref  # the quick-start configs read data/synthref/
OUT=${QUICKSTART_OUT:-work_dirs/quickstart}
MODELS=${QUICKSTART_MODELS:-"latentvg instalign"}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

if [ ! -f "$DATA/.complete" ]; then
    python tools/dataset_converters/make_synthref.py --out "$DATA"
    touch "$DATA/.complete"
fi

for m in $MODELS; do
    cfg=configs/quickstart/${m}_tiny_synthref.py
    wd=$OUT/$m
    echo "=== [quickstart] mim train mmrefer $cfg"
    mim train mmrefer "$cfg" --work-dir "$wd"
    ckpt=$(cat "$wd/last_checkpoint")
    echo "=== [quickstart] mim test mmrefer $cfg -C $ckpt   (GRES: gRefCOCO-format val)"
    mim test mmrefer "$cfg" -C "$ckpt" --work-dir "$wd/test_gres" --show-dir vis
    ris_cfg=configs/quickstart/${m}_tiny_synthref_ris-eval.py
    echo "=== [quickstart] mim test mmrefer $ris_cfg -C $ckpt   (RIS + REC: RefCOCO-format val)"
    mim test mmrefer "$ris_cfg" -C "$ckpt" --work-dir "$wd/test_ris"
    python tools/analysis_tools/quickstart_report.py demo --config "$cfg" --weights "$ckpt" \
        --data-root "$DATA" --out-dir "$OUT/demo/$m"
done

echo "=== [quickstart] results"
python tools/analysis_tools/quickstart_report.py summary --out "$OUT" --models $MODELS
