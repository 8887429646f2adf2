"""The track interface: what the shared trainer calls, and the registry of tracks.

A track is one module (`reed_jax.<name>.track`) with the hooks of `Track`. The trainer, the
modes (`reed_jax.modes`) and the config look a track up once (`get`) and never branch on which
one it is. Conventions every hook shares:

- batch: {field: [B, ...]} arrays, as the track's `train_iterator` yields them (host numpy);
  target fields are `target/<name>` (reed_jax.data.records.TARGET_PREFIX).
- noise level: `losses` returns it per sample in [0, 1] with 1 = pure noise, objective.combine's
  convention (images: t of the linear/cosine path; proteins: 1 - t, the masked fraction, since
  the protein track's t is the clean fraction; molecules: 1 - t, SemlaFlow's t = 1 being data).
  combine feeds it to each target's noise weight a(.) (e.g. 'linear' = 1 - noise level).
- params are float32 pytrees; `evaluate`/`sample` get the EMA params of the latest checkpoint.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

REGISTRY = {"image": "reed_jax.image.track", "protein": "reed_jax.protein.track",
            "molecule": "reed_jax.molecule.track"}


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A periodic evaluation during training: `run(ema_params, step) -> (metrics, picture)`, called
    every `every` steps and at the last step; `picture` is a uint8 [H, W, C] image for TensorBoard
    (a sample grid) or None. Its metrics land in <workdir>/eval/<name>_<step>.json and under
    `<name>/` in TensorBoard; with `history`, also in results.json (the run's evaluation history)."""
    name: str
    every: int
    run: Callable[[Any, int], tuple[dict, np.ndarray | None]]
    history: bool = True


@runtime_checkable
class Track(Protocol):
    """The hooks of one track (module-level functions and constants of `reed_jax.<name>.track`)."""

    NAME: str               # the config's `track`
    SOURCES: tuple          # the data.source values this track reads

    # ---- config
    def extend_schema(self, c) -> None:
        """Add the track's keys (its own block and its keys in shared blocks) to the schema `c`."""

    def validate(self, c, num_devices: int) -> None:
        """Raise config.ConfigError naming the first track key (or target key) that cannot run."""

    def preflight(self, config, mode: str) -> None:
        """Check the inputs `mode` ('train', 'evaluate', 'sample') will read (weights, references),
        before any compute; raise an error naming the config key."""

    # ---- model
    def build_model(self, config) -> Any:
        """The backbone with its projectors (a flax module)."""

    def init_params(self, config, model, rng: jax.Array) -> Any:
        """Fresh float32 params of `model`."""

    def logical_specs(self, model) -> Any:
        """Logical axis names of the params (parallel.RULES maps them to the mesh), or None."""

    def signature(self, config) -> dict:
        """What a checkpoint must match to belong to this model (JSON-able; never change it for an
        existing model: old checkpoints are checked against it)."""

    def losses(self, config, model, params, batch: dict, rng: jax.Array) -> tuple:
        """-> (generative loss [B] (or {'gen': [B], other weighted parts: [B]}, summed, each logged:
        objective.combine), {target name: alignment loss [B]}, noise level [B] in [0, 1], 1 = pure
        noise). Traced inside the jitted step."""

    # ---- data
    def precompute(self, config, out_dir: str, log: Callable = print) -> str:
        """Write the track's shards (frozen targets included) to `out_dir`; returns it."""

    def check_data(self, config, schema, data_dir: str) -> None:
        """Raise records.DataError if the shards in `data_dir` cannot feed this config."""

    def train_iterator(self, config, data_dir: str, batch_size: int, shard_index: int, shard_count: int,
                       log: Callable = print) -> Iterator[dict]:
        """This process's training batches (`batch_size` = the global batch / shard_count), an
        iterator with get_state() -> bytes and set_state(bytes)."""

    def frozen_encoders(self, config) -> dict:
        """{key: encoders.FrozenEncoder} computed inside the step (online targets), or {}; each
        encoder's apply(params, pixels) returns {target name: output} (encoders.build_online)."""

    # ---- evaluation
    def evaluations(self, config, workdir: str, data_dir: str, model, mesh, log: Callable = print) -> list:
        """The periodic evaluations during training: a list of `Evaluation`."""

    def evaluate(self, config, workdir: str, model, params, step: int, mesh, log: Callable = print) -> dict:
        """`--mode=evaluate`: the track's metrics of `params` (EMA of checkpoint `step`)."""

    def sample(self, config, workdir: str, model, params, step: int, mesh, log: Callable = print) -> str:
        """`--mode=sample`: write samples of `params` under <workdir>/samples/; returns the main file."""


_CHECKED: set[str] = set()  # registered tracks whose module has passed `check`
HOOKS = tuple(n for n, v in vars(Track).items() if inspect.isfunction(v) and not n.startswith("_"))


def get(config_or_name) -> Track:
    """The track module of `config.track` (or of a name), checked against `Track`."""
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.track
    if name not in REGISTRY:
        from reed_jax.config import ConfigError
        raise ConfigError(f"track={name!r} is not one of {tuple(REGISTRY)}")
    module = importlib.import_module(REGISTRY[name])
    if name not in _CHECKED:  # once per process: get() is called at every start-up step
        check(module)
        _CHECKED.add(name)
    return module


def check(module) -> None:
    """Raise TypeError unless `module` has every hook of `Track` with the protocol's parameters."""
    missing = [n for n in HOOKS + ("NAME", "SOURCES") if not hasattr(module, n)]
    if missing:
        raise TypeError(f"track module {module.__name__} lacks {missing} (see reed_jax.tracks.Track)")
    for n in HOOKS:
        want = list(inspect.signature(getattr(Track, n)).parameters)[1:]  # without self
        params = inspect.signature(getattr(module, n)).parameters
        if any(p.kind == p.VAR_POSITIONAL for p in params.values()):
            continue  # a wrapper (*args): nothing to compare
        have = list(params)
        if have != want:
            raise TypeError(f"{module.__name__}.{n}{tuple(have)} does not match Track.{n}{tuple(want)}")
