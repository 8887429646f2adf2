"""reed_jax entry point.

    python main.py --config=configs/<file>.py[:arg] --workdir=DIR [--mode=train] [--config.key=value ...]

Modes: precompute (frozen encoders -> shards), train (resumes automatically), sample (EMA grid),
evaluate (FID/sFID/IS/precision-recall of the latest checkpoint; resumable), import (a PyTorch
SiT/REPA/REED checkpoint -> orbax, `--torch_checkpoint=PATH [--torch_key=ema] [--import_step=N]`).
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to an ml_collections config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for shards, checkpoints, summaries and samples.")
flags.DEFINE_enum("mode", "train", ["precompute", "train", "sample", "evaluate", "import"], "Job to run.")
flags.DEFINE_string("torch_checkpoint", None, "--mode=import: a PyTorch SiT/REPA/REED .pt file.")
flags.DEFINE_string("torch_key", None, "--mode=import: entry holding the state dict (default: ema, else model).")
flags.DEFINE_integer("import_step", 0, "--mode=import: the step the imported checkpoint is saved as.")
flags.DEFINE_string("torch_projectors", None, "--mode=import: target names of projectors.0,1,... "
                    "(default: token-level targets, then pooled ones).")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first: with --coordinator_address/"
                  "--num_processes/--process_id, else JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / "
                  "JAX_PROCESS_ID, else auto-detection (TPU pods, SLURM, Open MPI).")
flags.DEFINE_string("coordinator_address", None, "--multihost: host:port of process 0's coordinator.")
flags.DEFINE_integer("num_processes", None, "--multihost: number of processes in the run.")
flags.DEFINE_integer("process_id", None, "--multihost: this process's index, 0..num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])

DIST_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
            "process_id": "JAX_PROCESS_ID"}


def distributed_args(flag_values: dict, environ) -> dict:
    """jax.distributed.initialize's keyword arguments: each from its flag, else its JAX_* variable;
    absent ones are left to JAX's cluster auto-detection (TPU VMs, SLURM, Open MPI)."""
    out = {}
    for key, env in DIST_ENV.items():
        value = flag_values.get(key)
        if value is None and environ.get(env):
            value = environ[env]
        if value is not None:
            out[key] = value if key == "coordinator_address" else int(value)
    if "process_id" in out and "num_processes" in out and not 0 <= out["process_id"] < out["num_processes"]:
        raise app.UsageError(f"--process_id={out['process_id']} is outside 0..--num_processes-1="
                             f"{out['num_processes'] - 1}")
    return out


def init_distributed() -> None:
    """Join the multi-process run (`--multihost`). On CPU the collectives go through gloo, so a
    multi-process run can be rehearsed on one machine (launch/local_multihost.sh)."""
    import os

    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kw = distributed_args({k: getattr(FLAGS, k) for k in DIST_ENV}, os.environ)
    jax.distributed.initialize(**kw)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.multihost:
        init_distributed()
    elif any(getattr(FLAGS, k) is not None for k in DIST_ENV):
        raise app.UsageError("--coordinator_address/--num_processes/--process_id need --multihost")
    from reed_jax import config as config_lib, logs, modes, train
    from reed_jax.data import precompute

    config = FLAGS.config
    config_lib.validate(config)
    logging.set_verbosity(logging.WARNING)
    if FLAGS.mode == "precompute":
        out = precompute.precompute(config, FLAGS.workdir)
        print(f"shards: {out}")
    elif FLAGS.mode == "train":
        result = train.train_and_evaluate(config, FLAGS.workdir)
        print("final evaluation:", logs.format_metrics(result, ", "))
        print(f"outputs in {FLAGS.workdir}: checkpoints/, eval/, samples/, tensorboard/, results.json")
    elif FLAGS.mode == "import":
        if not FLAGS.torch_checkpoint:
            raise app.UsageError("--mode=import needs --torch_checkpoint=PATH")
        from reed_jax.image import importer
        importer.import_checkpoint(config, FLAGS.workdir, FLAGS.torch_checkpoint, FLAGS.torch_key, FLAGS.import_step,
                                   FLAGS.torch_projectors)
    elif FLAGS.mode == "evaluate":
        result = modes.evaluate_mode(config, FLAGS.workdir)
        print("evaluation:", logs.format_metrics(result, ", "))
    else:
        modes.sample_mode(config, FLAGS.workdir)


def _unknown_override(argv: list[str]) -> str | None:
    """The first `--config.<key>=...` override naming a key the config file does not have, or None."""
    import importlib.util
    import os

    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None:
        return None
    path, _, arg = spec.partition(":")
    mod_spec = importlib.util.spec_from_file_location("_reed_config", os.path.abspath(path))
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    cfg = mod.get_config(arg) if arg else mod.get_config()
    for a in argv:
        if not a.startswith("--config."):
            continue
        key = a[len("--config."):].split("=", 1)[0]
        node = cfg
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node.keys():
                return key
            node = node[part]
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, except that a `--config.<key>` override naming no key of the config stops with
    the one line `validate()` gives for an unknown key, instead of ml_collections' traceback."""
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError):
        try:
            key = _unknown_override(argv)
        except Exception:  # noqa: BLE001  (the config file itself fails: show the original error)
            key = None
        if key is None:
            raise
        from reed_jax.config import ConfigError
        sys.stderr.write(f"{ConfigError.__name__}: unknown config key {key!r}\n")
        sys.exit(2)


def run() -> None:
    """`main`, with a config error printed as its one-line message (no traceback) and exit status 2."""
    from reed_jax.config import ConfigError

    def guarded(argv):
        try:
            main(argv)
        except ConfigError as e:
            sys.stderr.write(f"{type(e).__name__}: {e}\n")
            sys.exit(2)

    app.run(guarded, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
