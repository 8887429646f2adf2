import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ["launch/gpu.sh", "launch/slurm.sbatch", "launch/tpu_vm.sh", "launch/common.sh", "launch/eval_fid.sh"]


def sh(args, **env):
    return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, DRY_RUN="1", **env), timeout=60)


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
    assert subprocess.run(["bash", "-n", os.path.join(ROOT, script)]).returncode == 0


def test_gpu_dry_run():
    out = sh(["launch/gpu.sh", "configs/demo.py", "/tmp/w", "--config.train.steps=5"])
    assert out.returncode == 0, out.stderr
    assert "main.py --config=configs/demo.py --workdir=/tmp/w --mode=train --config.train.steps=5" in out.stdout
    assert sh(["launch/gpu.sh"]).returncode == 2


def test_slurm_dry_run():
    out = sh(["launch/slurm.sbatch", "configs/imagenet_sit_xl_2_reed.py", "/ckpt/x"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("srun --kill-on-bad-exit=1 python")
    assert "main.py --multihost --config=configs/imagenet_sit_xl_2_reed.py --workdir=/ckpt/x --mode=train" in out.stdout


def test_tpu_vm_dry_run():
    env = dict(TPU_NAME="t1", TPU_ZONE="z1", TPU_TYPE="v5p-64")
    out = sh(["launch/tpu_vm.sh", "create"], **env)
    assert "gcloud compute tpus tpu-vm create t1 --zone=z1 --accelerator-type=v5p-64" in out.stdout
    out = sh(["launch/tpu_vm.sh", "run", "configs/imagenet_sit_xl_2_reed.py", "gs://b/x"], **env)
    assert out.returncode == 0, out.stderr
    assert "--worker=all" in out.stdout and "main.py\\ --multihost\\ --config=configs/imagenet_sit_xl_2_reed.py" in out.stdout
    assert "tpu-vm delete t1" in sh(["launch/tpu_vm.sh", "delete"], **env).stdout
    assert sh(["launch/tpu_vm.sh", "bogus"], **env).returncode == 2
    assert sh(["launch/tpu_vm.sh", "create"]).returncode != 0  # TPU_NAME / TPU_ZONE required


def test_eval_fid_dry_run():
    args = ["configs/imagenet_sit_xl_2_reed.py", "/ckpt/x", "/w/inception.pth", "/w/ref.npz", "--config.sample.cfg_scale=1.8"]
    out = sh(["launch/eval_fid.sh", "gpu", *args])
    assert out.returncode == 0, out.stderr
    assert ("--mode=evaluate --config.eval.inception_path=/w/inception.pth --config.eval.reference=/w/ref.npz "
            "--config.sample.method=sde --config.sample.num_steps=250 --config.eval.fid_samples=50000 "
            "--config.sample.cfg_scale=1.8") in out.stdout
    out = sh(["launch/eval_fid.sh", "tpu", *args], TPU_NAME="t1", TPU_ZONE="z1")
    assert out.returncode == 0, out.stderr
    assert "--mode=evaluate" in out.stdout and "main.py\\ --multihost" in out.stdout
    assert sh(["launch/eval_fid.sh", "gpu"]).returncode == 2
