#!/usr/bin/env bash
# Single node, all local GPUs, one process.
#   bash launch/gpu.sh configs/imagenet_sit_xl_2_reed.py /ckpt/reed_xl --config.data.dir=/data/shards
#   DRY_RUN=1 bash launch/gpu.sh ...     # print the command only
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 CONFIG WORKDIR [main.py flags...]" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/common.sh"
config=$1; workdir=$2; shift 2
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}"
run python "$here/../main.py" --config="$config" --workdir="$workdir" --mode="${MODE:-train}" "$@"
