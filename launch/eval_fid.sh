#!/usr/bin/env bash
# FID-50K (+ sFID, IS, precision/recall) of a workdir's latest checkpoint, through one of the launchers.
#   bash launch/eval_fid.sh gpu   configs/imagenet_sit_xl_2_reed.py /ckpt/reed_xl /data/pt_inception-2015-12-05-6726825d.pth /data/VIRTUAL_imagenet256_labeled.npz   (the config carries its paper's guidance: :none/:reed/:repa)
#   bash launch/eval_fid.sh slurm ...      (sbatch-style multi-node: srun one process per node)
#   TPU_NAME=... TPU_ZONE=... bash launch/eval_fid.sh tpu ...   (every worker of a TPU VM slice)
#   DRY_RUN=1 bash launch/eval_fid.sh ...  # print the command only
# Defaults follow the published protocol: SDE sampler, 250 steps, 50,000 samples; any main.py
# flag after the five arguments overrides them. Resumable: rerun the same command after a kill.
set -euo pipefail
[ $# -ge 5 ] || { echo "usage: $0 gpu|slurm|tpu CONFIG WORKDIR INCEPTION_PTH REFERENCE_NPZ [main.py flags...]" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
target=$1; config=$2; workdir=$3; inception=$4; reference=$5; shift 5
flags=(--config.eval.inception_path="$inception" --config.eval.reference="$reference"
       --config.sample.method=sde --config.sample.num_steps=250 --config.eval.fid_samples=50000 "$@")
export MODE=evaluate
case "$target" in
  gpu) exec bash "$here/gpu.sh" "$config" "$workdir" "${flags[@]}" ;;
  slurm) exec bash "$here/slurm.sbatch" "$config" "$workdir" "${flags[@]}" ;;
  tpu) exec bash "$here/tpu_vm.sh" run "$config" "$workdir" "${flags[@]}" ;;
  *) echo "unknown target $target (gpu, slurm or tpu)" >&2; exit 2 ;;
esac
