#!/usr/bin/env bash
# TPU VM / pod slice with gcloud: create, install the code on every worker, run main.py on all
# workers with the same config (jax.distributed initialises itself on TPU VMs), stream logs, delete.
#   export TPU_NAME=reed-v5p TPU_ZONE=us-east5-a TPU_TYPE=v5p-64 TPU_VERSION=v2-alpha-tpuv5
#   bash launch/tpu_vm.sh create
#   bash launch/tpu_vm.sh setup
#   bash launch/tpu_vm.sh run configs/imagenet_sit_xl_2_reed.py gs://bucket/reed_xl --config.data.dir=/mnt/shards
#   bash launch/tpu_vm.sh logs
#   bash launch/tpu_vm.sh delete
#   DRY_RUN=1 bash launch/tpu_vm.sh ...     # print the gcloud commands only
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/common.sh"
: "${TPU_NAME:?set TPU_NAME}" "${TPU_ZONE:?set TPU_ZONE}"
TPU_TYPE="${TPU_TYPE:-v4-8}"
TPU_VERSION="${TPU_VERSION:-tpu-ubuntu2204-base}"
REMOTE_DIR="${REMOTE_DIR:-reed_jax}"
ssh_all() { run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$TPU_ZONE" --worker=all --command="$1"; }
cmd="${1:-}"; shift || true
case "$cmd" in
  create)
    run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$TPU_ZONE" --accelerator-type="$TPU_TYPE" \
      --version="$TPU_VERSION" ;;
  setup)
    run gcloud compute tpus tpu-vm scp --recurse "$here/.." "$TPU_NAME:$REMOTE_DIR" --zone="$TPU_ZONE" --worker=all
    ssh_all "cd $REMOTE_DIR && pip install -q 'jax[tpu]' -e ." ;;
  run)
    [ $# -ge 2 ] || { echo "usage: $0 run CONFIG WORKDIR [main.py flags...]" >&2; exit 2; }
    config=$1; workdir=$2; shift 2
    ssh_all "cd $REMOTE_DIR && nohup python main.py --multihost --config=$config --workdir=$workdir --mode=${MODE:-train} $* > run.log 2>&1 &" ;;
  logs)
    run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$TPU_ZONE" --worker=0 --command="tail -f $REMOTE_DIR/run.log" ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$TPU_ZONE" --quiet ;;
  *)
    echo "usage: $0 {create|setup|run CONFIG WORKDIR [flags]|logs|delete}" >&2; exit 2 ;;
esac
