#!/usr/bin/env bash
# Train on a Slurm cluster (one task per GPU), as MMDetection's tools/slurm_train.sh:
#   [GPUS=16] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#       tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# GPUS tasks in all, GPUS_PER_NODE per node (GPUS=16 GPUS_PER_NODE=8: two nodes). Each task runs
# tools/train.py --launcher slurm: mmengine reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID,
# takes the first host of SLURM_NODELIST as MASTER_ADDR (unless set) and MASTER_PORT (default
# 29500) from the environment. mmengine's slurm launcher needs CUDA (it calls
# torch.cuda.set_device); on CPU machines use tools/dist_train.sh with NNODES / NODE_RANK.

set -x

PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PY_ARGS=${@:5}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p ${PARTITION} \
    --job-name=${JOB_NAME} \
    --gres=gpu:${GPUS_PER_NODE} \
    --ntasks=${GPUS} \
    --ntasks-per-node=${GPUS_PER_NODE} \
    --cpus-per-task=${CPUS_PER_TASK} \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    python -u "$(dirname "$0")/train.py" ${CONFIG} --work-dir=${WORK_DIR} --launcher="slurm" ${PY_ARGS}
