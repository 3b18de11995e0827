#!/usr/bin/env bash
# Distributed training with torchrun (--launcher pytorch), as MMDetection's tools/dist_train.sh.
#   tools/dist_train.sh CONFIG NPROC_PER_NODE [train.py args]
# One machine: tools/dist_train.sh CONFIG 8. Several machines: run the same command on every
# node with NNODES (number of nodes), NODE_RANK (0 .. NNODES-1), MASTER_ADDR (address of node 0,
# reachable from the others) and PORT (a free port on node 0, the same everywhere), e.g.
#   node 0: NNODES=2 NODE_RANK=0 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_train.sh CONFIG 8
#   node 1: NNODES=2 NODE_RANK=1 MASTER_ADDR=10.1.1.1 PORT=29500 tools/dist_train.sh CONFIG 8
# Without CUDA the processes use the gloo backend (mmrefer.utils.setup_env.setup_cpu_distributed).
# PYTHON picks the interpreter (default: python on PATH).
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
