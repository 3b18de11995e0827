#!/usr/bin/env bash
# The prepared GPU check (issue #16 item 6): speed, peak memory and a one-batch overfit of
# configs/latentvg_beit3.py and instalign_swin-b_roberta_grefcoco.py at 480 with random weights,
# in one call on one GPU. docs/benchmarks.md ("GPU check") gives the one-call command.
#
#   bash tools/analysis_tools/gpu_check.sh OUT_DIR [--device cuda|cpu] [--quick] [--deps DIR]
#        [--budget SECONDS] [--build-deadline SECONDS] [--force-profile] [--sizes "K=V ..."]
#        [--models "latentvg instalign"] [--no-build] [--no-overfit] [--overfit-models "..."]
#        [--compile BACKEND] [--compile-mode MODE] [--only "PATTERN ..."]
#
#   --device         cuda (default) or cpu
#   --quick          tiny sizes, a few iterations: the CPU dry run (tests/tools/test_gpu_check.py)
#   --deps DIR       carried wheels + mmcv sdist (default .gpu_deps, made by fetch_gpu_deps.sh)
#   --budget S       the whole run must end within S seconds (default 470 on cuda, 900 on cpu)
#   --build-deadline S  seconds after the start by which the mmcv build must be done (default
#                    budget - 100: the time kept for InstAlign's speed with the built ops)
#   --force-profile  profiler summaries even when no goal is missed
#   --sizes "K=V ..."  batch sizes / iteration counts for gpu_check.py --sizes (e.g. a shorter
#                    run: "train_iters=20 overfit_iters=100")
#   --models "..."   the models to measure (default "latentvg instalign"; Latent-VG runs first)
#   --no-build       no mmcv ops build: InstAlign runs its deformable attention in PyTorch (a
#                    short follow-up call: the build alone takes ~6 minutes on the H200 machine)
#   --no-overfit     speed and memory only
#   --overfit-models "..."  the models that also run the overfit (default: every one measured)
#   --compile BACKEND  also bf16 inference and training with the model's forward torch.compile-d
#                    (inductor; eager for a dry run); --compile-mode e.g. reduce-overhead
#   --only "PATTERN ..."  only the measurements whose keys match (shell patterns, e.g.
#                    "infer_bf16_b32* train_bf16_b16 train_bf16_b16_compiled")
#
# Steps (their times are recorded under "setup" in OUT_DIR/gpu_check.json):
#  1. when mmengine / mmdet are not importable: pip-installs the wheels of DIR into
#     $WORK/site (--target, no index, no deps) and puts it on PYTHONPATH;
#  2. when mmcv is not importable with its ops: unpacks DIR/mmcv-2.1.0.tar.gz (its pure-Python
#     part is importable at once) and builds its ops in place in the background
#     (MMCV_WITH_OPS=1 FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST of this GPU only, MAX_JOBS = the cores
#     not kept for the measurements), log in OUT_DIR/mmcv_build.log; CUDA_HOME from nvcc's TOP
#     when unset, and the cuBLAS/cuSPARSE headers of torch's nvidia wheels on CPATH when
#     CUDA_HOME lacks them (gpu_check.py --cuda-build-env);
#  3. while it builds, on 2 cores kept for them (when there are >= 4): Latent-VG (it calls no
#     mmcv op: mmcv._ext is a stub that raises), then InstAlign with its deformable attention
#     on mmcv's PyTorch path, overfit included;
#  4. once the ops are built (waiting until the build deadline, then killing the build):
#     InstAlign's speed again with mmcv's CUDA deformable attention, on all cores;
#  5. writes OUT_DIR/gpu_check.json, gpu_check.md, gpu_check.log (and mmcv_build.log).
# Without a build (mmcv already importable) both models run once, in that order.
# GPU_CHECK_BUILD_CMD (tests only) replaces the mmcv build command, to exercise steps 2-4 on a
# machine where mmcv is already installed.
set -uo pipefail

usage() { sed -n '2,/^# Steps/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1; shift
case "$OUT" in -*) usage ;; esac
DEVICE=cuda; QUICK=0; DEPS=""; BUDGET=""; BUILD_DEADLINE=""; FORCE_PROFILE=0; SIZES=""
MODELS="latentvg instalign"; NO_BUILD=0; OVERFIT_MODELS="latentvg instalign"
COMPILE=""; COMPILE_MODE=""; ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=${2:?--device needs a value}; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --deps) DEPS=${2:?--deps needs a folder}; shift 2 ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
        --build-deadline) BUILD_DEADLINE=${2:?--build-deadline needs seconds}; shift 2 ;;
        --force-profile) FORCE_PROFILE=1; shift ;;
        --sizes) SIZES=${2:?--sizes needs \"KEY=VALUE ...\"}; shift 2 ;;
        --models) MODELS=${2:?--models needs \"latentvg instalign\" or one of them}; shift 2 ;;
        --no-build) NO_BUILD=1; shift ;;
        --no-overfit) OVERFIT_MODELS=""; shift ;;
        --compile) COMPILE=${2:?--compile needs a backend (inductor, eager, ...)}; shift 2 ;;
        --compile-mode) COMPILE_MODE=${2:?--compile-mode needs a mode}; shift 2 ;;
        --only) ONLY=${2:?--only needs \"PATTERN ...\"}; shift 2 ;;
        --overfit-models) OVERFIT_MODELS=${2?--overfit-models needs a list (may be empty)}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; usage ;;
    esac
done
case "$DEVICE" in cuda|cuda:*|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;; esac
for m in $MODELS $OVERFIT_MODELS; do
    case "$m" in latentvg|instalign) ;; *) echo "gpu_check.sh: --models / --overfit-models take latentvg and / or instalign, got $m" >&2; exit 2 ;; esac
done
[ -n "$MODELS" ] || { echo "gpu_check.sh: --models is empty" >&2; exit 2; }
has_model() { case " $MODELS " in *" $1 "*) return 0 ;; esac; return 1; }
for v in "$BUDGET" "$BUILD_DEADLINE"; do
    case "$v" in ''|*[!0-9]*) [ -z "$v" ] || { echo "gpu_check.sh: --budget / --build-deadline take whole seconds, got $v" >&2; exit 2; } ;; esac
done

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT" || exit 1
DEPS=${DEPS:-$ROOT/.gpu_deps}
PY=${PYTHON:-python3}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}
mkdir -p "$OUT" "$WORK" || exit 1
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/gpu_check.json" "$OUT/gpu_check.md" "$OUT/mmcv_build.log"
exec > >(tee "$OUT/gpu_check.log") 2>&1
TEE_PID=$!
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
if [ -z "$BUDGET" ]; then
    if [ "$DEVICE" = cpu ]; then BUDGET=900; else BUDGET=470; fi
fi
IA_BUILT=100   # InstAlign's speed with the built ops (no overfit)
IA_FULL=250    # InstAlign in full (speed + overfit) after Latent-VG
[ "$NO_BUILD" = 1 ] && IA_FULL=$(( BUDGET * 6 / 10 ))  # a shorter follow-up call
[ -n "$BUILD_DEADLINE" ] || BUILD_DEADLINE=$(( BUDGET > IA_BUILT ? BUDGET - IA_BUILT : 0 ))
log() { echo "[gpu_check.sh +$(( $(date +%s) - T0 ))s] $*"; }
SETUP=("budget_s=$BUDGET")
DRIVER=(tools/analysis_tools/gpu_check.py "$OUT" --device "$DEVICE" --work-dir "$WORK")
[ "$QUICK" = 1 ] && DRIVER+=(--quick)
[ "$FORCE_PROFILE" = 1 ] && DRIVER+=(--force-profile)
[ -n "$COMPILE" ] && DRIVER+=(--compile "$COMPILE")
[ -n "$COMPILE_MODE" ] && DRIVER+=(--compile-mode "$COMPILE_MODE")
# --no-overfit for a model outside OVERFIT_MODELS
overfit_flag() { case " $OVERFIT_MODELS " in *" $1 "*) ;; *) echo --no-overfit ;; esac; }
# shellcheck disable=SC2206
[ -n "$SIZES" ] && DRIVER+=(--sizes $SIZES)
# shellcheck disable=SC2206
[ -n "$ONLY" ] && { set -f; DRIVER+=(--only $ONLY); set +f; }  # patterns, not file names
log "python: $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"

# ---- 1. the carried wheels
if "$PY" -c "import mmengine, mmdet" >/dev/null 2>&1; then
    SETUP+=("wheels=not needed (mmengine and mmdet importable)")
else
    ls "$DEPS"/*.whl >/dev/null 2>&1 || { log "no wheels in $DEPS: run tools/analysis_tools/fetch_gpu_deps.sh here first and carry that folder"; exit 1; }
    t=$(date +%s)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "$DEPS"/*.whl || { log "pip install of $DEPS/*.whl failed"; exit 1; }
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
    SETUP+=("wheels=$(ls "$DEPS"/*.whl | wc -l) installed from $(basename "$DEPS") in $(( $(date +%s) - t )) s")
    log "wheels installed into $WORK/site"
fi

# ---- 2. mmcv and its ops
BUILD_PID=""; BUILD_CMD=""; MMCV_SRC=""
# CPUs this process may use (nproc would follow OMP_NUM_THREADS)
NCPU=$("$PY" -c 'import os; print(len(os.sched_getaffinity(0)))' 2>/dev/null || echo 2)
MEASURE_CPUS=""; BUILD_CPUS=""; JOBS=$NCPU
if [ "$NCPU" -ge 4 ] && command -v taskset >/dev/null 2>&1; then
    MEASURE_CPUS=0,1; BUILD_CPUS=2-$(( NCPU - 1 )); JOBS=$(( NCPU - 2 ))
fi
if [ -z "${GPU_CHECK_BUILD_CMD:-}" ] && "$PY" -c "import mmcv.ops" >/dev/null 2>&1; then
    SETUP+=("mmcv_ops=importable before the run (no build)")
else
    if ! "$PY" -c "import mmcv" >/dev/null 2>&1; then
        SDIST=$(ls "$DEPS"/mmcv-2.1.0.tar.gz 2>/dev/null)
        [ -n "$SDIST" ] || { log "mmcv is not importable and $DEPS/mmcv-2.1.0.tar.gz is missing"; exit 1; }
        rm -rf "$WORK/mmcv-2.1.0"
        tar xzf "$SDIST" -C "$WORK" || { log "cannot unpack $SDIST"; exit 1; }
        MMCV_SRC=$WORK/mmcv-2.1.0
        export PYTHONPATH="$PYTHONPATH:$MMCV_SRC"
    fi
    if [ "$NO_BUILD" = 1 ] || ! has_model instalign; then
        # Latent-VG calls no mmcv op; InstAlign's deformable attention takes mmcv's PyTorch path
        UNBUILT="none ($( [ "$NO_BUILD" = 1 ] && echo '--no-build' || echo 'InstAlign not measured'): mmcv's Python part only)"
        OPS_UNBUILT=stub
    elif [ -n "${GPU_CHECK_BUILD_CMD:-}" ]; then
        BUILD_CMD=$GPU_CHECK_BUILD_CMD
        SETUP+=("mmcv_build_cmd=GPU_CHECK_BUILD_CMD: $BUILD_CMD")
    else
        [ -n "$MMCV_SRC" ] || { log "mmcv is importable without its ops: install mmcv 2.1.0 with ops, or run where it is absent"; exit 1; }
        if [ "$DEVICE" = cpu ]; then
            ARCH=""
        else
            ARCH=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || { log "torch sees no GPU"; exit 1; }
            # CUDA_HOME, PATH, CPATH, LIBRARY_PATH where the CUDA installation needs them
            # (gpu_check.py's cuda_build_env: nvcc's own TOP as CUDA_HOME, the cuBLAS /
            # cuSPARSE headers of torch's nvidia wheels when CUDA_HOME lacks them)
            while read -r kind item; do
                case "$kind" in env) export "${item?}" ;; setup) SETUP+=("$item") ;; esac
            done < <("$PY" tools/analysis_tools/gpu_check.py --cuda-build-env 2>/dev/null)
        fi
        # torch's C++ compiler is c++ (nvcc calls gcc itself)
        command -v c++ >/dev/null 2>&1 || { command -v g++ >/dev/null 2>&1 && export CXX=g++; }
        # torch compiles the ops in parallel (MAX_JOBS) only through ninja; pip's ninja sits
        # beside the interpreter
        PYBIN=$(dirname "$(command -v "$PY")")
        command -v ninja >/dev/null 2>&1 || export PATH="$PYBIN:$PATH"
        NINJA=$("$PY" -c "from torch.utils.cpp_extension import is_ninja_available as n; print('yes' if n() else 'NO (serial distutils build)')" 2>/dev/null)
        SETUP+=("ninja=$NINJA")
        BUILD_CMD="cd '$MMCV_SRC' && MMCV_WITH_OPS=1 $( [ "$DEVICE" = cpu ] || echo "FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$ARCH" ) MAX_JOBS=$JOBS '$PY' setup.py build_ext --inplace"
        SETUP+=("mmcv_build_cmd=MMCV_WITH_OPS=1 ${ARCH:+FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$ARCH }MAX_JOBS=$JOBS python setup.py build_ext --inplace (mmcv 2.1.0 sdist; nvcc $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p'))")
    fi
fi
if [ -n "$BUILD_CMD" ]; then
    log "building mmcv ops in the background${BUILD_CPUS:+ on CPUs $BUILD_CPUS}: $BUILD_CMD"
    BPIN=(); [ -n "$BUILD_CPUS" ] && BPIN=(taskset -c "$BUILD_CPUS")
    TB0=$(date +%s)
    set -m  # the build gets its own process group, so that a kill reaches nvcc and ninja
    "${BPIN[@]}" bash -c "$BUILD_CMD" >"$OUT/mmcv_build.log" 2>&1 &
    BUILD_PID=$!
    export GPU_CHECK_BUILD_PID=$BUILD_PID  # measurements taken meanwhile say so
    set +m
    OPS=stub
else
    OPS=${OPS_UNBUILT:-built}
fi

# ---- 3. while it builds: Latent-VG, then InstAlign with PyTorch deformable attention
building() { [ -n "$BUILD_PID" ] && kill -0 "$BUILD_PID" 2>/dev/null; }
BUILD_STATE=${UNBUILT:-not needed}
finish_build() {  # reap the build (killing it first when $1 = kill); sets BUILD_STATE and OPS
    [ -n "$BUILD_PID" ] || return 0
    if [ "${1:-}" = kill ] && building; then
        kill -TERM -- "-$BUILD_PID" 2>/dev/null; sleep 1; kill -KILL -- "-$BUILD_PID" 2>/dev/null
        wait "$BUILD_PID" 2>/dev/null
        OBJS=$(find "${MMCV_SRC:-/nonexistent}" -name '*.o' 2>/dev/null | wc -l)
        BUILD_STATE="not finished after $(( $(date +%s) - TB0 )) s (killed at the build deadline, +${BUILD_DEADLINE} s; $OBJS objects compiled)"
    else
        wait "$BUILD_PID"; rc=$?
        BT=$(( $(date +%s) - TB0 ))
        if [ "$rc" -eq 0 ] && "$PY" -c "import mmcv.ops; from mmcv.ops import MultiScaleDeformableAttention" >/dev/null 2>&1; then
            BUILD_STATE="built in ${BT} s (wall${BUILD_CPUS:+, on CPUs $BUILD_CPUS while the measurements ran on CPUs $MEASURE_CPUS})"
            OPS=built
        else
            BUILD_STATE="failed after ${BT} s (exit code $rc; mmcv_build.log: $(grep -m1 -E '(error|Error)[: ]' "$OUT/mmcv_build.log" | cut -c1-200))"
        fi
    fi
    BUILD_PID=""
    log "mmcv build: $BUILD_STATE"
    if [ -f "$OUT/mmcv_build.log" ] && [ "$(wc -c <"$OUT/mmcv_build.log")" -gt 2000000 ]; then
        { head -c 500000 "$OUT/mmcv_build.log"; echo; echo '[... cut ...]'; tail -c 1000000 "$OUT/mmcv_build.log"; } >"$OUT/mmcv_build.log.cut" && mv "$OUT/mmcv_build.log.cut" "$OUT/mmcv_build.log"
    fi
}
pin() { if building && [ -n "$MEASURE_CPUS" ]; then echo "taskset -c $MEASURE_CPUS"; fi; }

if has_model latentvg; then
    LV_END=$(( T0 + BUDGET )); has_model instalign && LV_END=$(( T0 + BUDGET - IA_FULL ))
    log "Latent-VG (mmcv ops: $OPS) $(pin)"
    $(pin) "$PY" "${DRIVER[@]}" --models latentvg --mmcv-ops "$OPS" $(overfit_flag latentvg) \
        --deadline "$LV_END" --setup "${SETUP[@]}" \
        || log "Latent-VG driver exited with $?"
fi

if [ -n "$BUILD_PID" ] && ! building; then finish_build; fi
if [ -n "$BUILD_PID" ] && [ "$(date +%s)" -ge $(( T0 + BUILD_DEADLINE )) ]; then finish_build kill; fi
IA_OVERFIT_DONE=0
if [ "$OPS" = stub ] && has_model instalign; then
    # the build is still running (InstAlign with the built ops follows) or it failed (this is
    # InstAlign's only run)
    if building; then IA_END=$(( T0 + BUILD_DEADLINE )); else IA_END=$(( T0 + BUDGET )); fi
    log "InstAlign, deformable attention in PyTorch (mmcv ops not built) $(pin)"
    $(pin) "$PY" "${DRIVER[@]}" --models instalign --mmcv-ops stub $(overfit_flag instalign) \
        --deadline "$IA_END"
    IA_RC=$?
    [ "$IA_RC" = 0 ] || log "InstAlign driver exited with $IA_RC"
    IA_OVERFIT_DONE=1
fi

# ---- 4. the build, then InstAlign with the built ops
if [ -n "$BUILD_PID" ]; then
    while building && [ "$(date +%s)" -lt $(( T0 + BUILD_DEADLINE )) ]; do sleep 2; done
    if building; then finish_build kill; else finish_build; fi
fi
if [ "$OPS" = stub ] && [ -n "$BUILD_CMD" ] && [ "${IA_RC:-0}" = 3 ] && [ $(( T0 + BUDGET - $(date +%s) )) -ge 60 ]; then
    # no built ops after all, and the PyTorch-attention run was cut for the build's sake
    log "InstAlign, deformable attention in PyTorch, again with the time left"
    "$PY" "${DRIVER[@]}" --models instalign --mmcv-ops stub $(overfit_flag instalign) \
        --deadline $(( T0 + BUDGET )) \
        || log "InstAlign driver exited with $?"
fi
if [ "$OPS" = built ] && has_model instalign; then
    # the PyTorch-attention run did the overfit unless it was cut short
    NO_OVERFIT=($(overfit_flag instalign))
    [ "$IA_OVERFIT_DONE" = 1 ] && [ "${IA_RC:-1}" = 0 ] && NO_OVERFIT=(--no-overfit)
    log "InstAlign (mmcv ops: built)"
    "$PY" "${DRIVER[@]}" --models instalign --mmcv-ops built "${NO_OVERFIT[@]}" \
        --deadline $(( T0 + BUDGET )) || log "InstAlign driver exited with $?"
fi

# ---- 5. the report
"$PY" tools/analysis_tools/gpu_check.py "$OUT" --finalize \
    --setup "${SETUP[@]}" "mmcv_build=$BUILD_STATE" "wall_s=$(( $(date +%s) - T0 ))"
log "done in $(( $(date +%s) - T0 )) s: $OUT/gpu_check.json, $OUT/gpu_check.md"
cat "$OUT/gpu_check.md"
exec 1>&- 2>&-  # let tee write the last lines before the script ends
wait "$TEE_PID" 2>/dev/null || true
