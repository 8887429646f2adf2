"""A safe reader of NeuroChem's ANI resource files, as the torchani 2.2.4 wheel ships them.

    files = ani_files.load(".data/torchani-2.2.4-py3-none-any.whl")      # or the ani-1x_8x folder

The ANI-1x ensemble lives in the wheel under `torchani/resources/ani-1x_8x/`:
- `rHCNO-5.2R_16-3.5A_a4-8.params`: the atomic environment vector's constants, one `key = value`
  a line (Rcr, Rca in Angstrom; EtaR [1/A^2], ShfR [A], Zeta, ShfZ [rad], EtaA [1/A^2], ShfA [A]
  as `[a,b,...]` lists; Atyp = [H,C,N,O], the species order of every index below);
- `sae_linfit.dat`: the self (atomic reference) energies in Hartree, `H,0=-0.6009...` a line;
- `train0` .. `train7/networks/ANN-<X>.nnf`: one network description per element, a decimal byte
  count, `=`, a newline and a bzip2 stream of text: `inputsize=384; atom_net H $ layer [ nodes=160;
  activation=9; blocksize=384; ... weights=FILE:ANN-H.nnf-l1.wparam[61440];
  biases=FILE:ANN-H.nnf-l1.bparam[160]; ] ... $`; activation 9 = CELU(alpha 0.1), 6 = identity;
- `ANN-<X>.nnf-l<k>.wparam` / `.bparam`: raw little-endian float32, the weight row-major as
  [nodes, blocksize] (out x in), the bias [nodes].

Nothing here executes or unpickles anything: the descriptions are parsed by a small tokenizer, every
array's byte count is checked against its description (and layer widths against each other), and
each error names the file. The bzip2 stream is decompressed with a size cap.
"""
from __future__ import annotations

import bz2
import dataclasses
import os
import re
import zipfile

import numpy as np

WHEEL_ROOT = "torchani/resources/ani-1x_8x"
PARAMS_FILE = "rHCNO-5.2R_16-3.5A_a4-8.params"
SAE_FILE = "sae_linfit.dat"
ENSEMBLE_SIZE = 8
ACTIVATIONS = {9: "celu", 6: "identity"}  # NeuroChem activation indices this reader accepts
CELU_ALPHA = 0.1
_MAX_NNF_TEXT = 1 << 16  # a description decompresses to ~1.1 KB; anything past 64 KiB is refused
_LIST_KEYS = ("EtaR", "ShfR", "Zeta", "ShfZ", "EtaA", "ShfA")


class AniFileError(ValueError):
    """A resource file that is missing, malformed or inconsistent (the message names it)."""


@dataclasses.dataclass(frozen=True)
class AEVParams:
    """The atomic environment vector's constants (lengths in Angstrom, angles in radians)."""
    species: tuple[str, ...]  # ('H', 'C', 'N', 'O'): the index order of every per-species array
    Rcr: float                # radial cutoff
    Rca: float                # angular cutoff (<= Rcr)
    EtaR: np.ndarray          # [nEtaR] radial Gaussian widths, 1/A^2
    ShfR: np.ndarray          # [nShfR] radial Gaussian centres, A
    EtaA: np.ndarray          # [nEtaA] angular-distance Gaussian widths, 1/A^2
    Zeta: np.ndarray          # [nZeta] angular exponents
    ShfA: np.ndarray          # [nShfA] angular-distance centres, A
    ShfZ: np.ndarray          # [nShfZ] angle centres, rad

    @property
    def radial_sublength(self) -> int:
        return self.EtaR.size * self.ShfR.size

    @property
    def angular_sublength(self) -> int:
        return self.EtaA.size * self.Zeta.size * self.ShfA.size * self.ShfZ.size

    @property
    def length(self) -> int:
        """AEV width: species x radial_sublength + species pairs (with repeats) x angular_sublength."""
        s = len(self.species)
        return s * self.radial_sublength + s * (s + 1) // 2 * self.angular_sublength


@dataclasses.dataclass(frozen=True)
class Layer:
    weight: np.ndarray  # [out, in] float32
    bias: np.ndarray    # [out] float32
    activation: str     # 'celu' (alpha 0.1) or 'identity'


@dataclasses.dataclass(frozen=True)
class AniFiles:
    """Everything the ANI-1x ensemble needs: AEV constants, self energies, 8 x {element: layers}."""
    aev: AEVParams
    self_energies: np.ndarray              # [len(aev.species)] float64, Hartree, in aev.species order
    models: tuple[dict[str, tuple[Layer, ...]], ...]  # one {element: layers} per ensemble member
    source: str


# ---------------------------------------------------------------------------------------------- sources

class _Source:
    """Reads members of the resource folder from a wheel (zip) or a directory, by relative path."""

    def __init__(self, path: str):
        self.path = path
        if not os.path.exists(path):
            raise AniFileError(f"{path!r} does not exist (`make data` downloads torchani-2.2.4-py3-none-any.whl "
                               f"into .data/)")
        self.zip = None
        if os.path.isfile(path):
            if not zipfile.is_zipfile(path):
                raise AniFileError(f"{path}: neither a folder nor a wheel (zip)")
            self.zip = zipfile.ZipFile(path)
            self.names = set(self.zip.namelist())

    def name(self, rel: str) -> str:
        return f"{self.path}!{WHEEL_ROOT}/{rel}" if self.zip else os.path.join(self.path, rel)

    def read(self, rel: str, max_bytes: int = 1 << 24) -> bytes:
        if self.zip is not None:
            member = f"{WHEEL_ROOT}/{rel}"
            if member not in self.names:
                raise AniFileError(f"{self.name(rel)}: missing from the wheel (not a torchani 2.2.4 wheel?)")
            if self.zip.getinfo(member).file_size > max_bytes:
                raise AniFileError(f"{self.name(rel)}: larger than {max_bytes} bytes")
            return self.zip.read(member)
        p = os.path.join(self.path, rel)
        if not os.path.isfile(p):
            raise AniFileError(f"{p}: missing")
        if os.path.getsize(p) > max_bytes:
            raise AniFileError(f"{p}: larger than {max_bytes} bytes")
        with open(p, "rb") as fh:
            return fh.read()


# ---------------------------------------------------------------------------------------------- parsers

def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise AniFileError(f"{name}: not ASCII text") from None


def parse_params(text: str, name: str) -> AEVParams:
    """The AEV constants file -> AEVParams (every key required, lists non-empty, Rca <= Rcr)."""
    vals: dict = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = (x.strip() for x in line.partition("="))
        if not sep:
            raise AniFileError(f"{name}:{i}: expected 'key = value', got {line!r}")
        try:
            if key in ("Rcr", "Rca"):
                vals[key] = float(value)
            elif key in _LIST_KEYS:
                vals[key] = np.array([float(x) for x in value.strip("[]").split(",")], np.float32)
            elif key == "Atyp":
                vals[key] = tuple(x.strip() for x in value.strip("[]").split(","))
            elif key != "TM":
                raise AniFileError(f"{name}:{i}: unknown key {key!r}")
        except ValueError as e:
            if isinstance(e, AniFileError):
                raise
            raise AniFileError(f"{name}:{i}: cannot read {key} = {value!r}") from None
    missing = [k for k in ("Rcr", "Rca", "Atyp") + _LIST_KEYS if k not in vals]
    if missing:
        raise AniFileError(f"{name}: missing keys {missing}")
    if not 0 < vals["Rca"] <= vals["Rcr"]:
        raise AniFileError(f"{name}: need 0 < Rca <= Rcr, got Rca={vals['Rca']}, Rcr={vals['Rcr']}")
    return AEVParams(species=vals["Atyp"], **{k: vals[k] for k in ("Rcr", "Rca") + _LIST_KEYS})


def parse_sae(text: str, name: str, species: tuple[str, ...]) -> np.ndarray:
    """`X,i=value` lines -> [len(species)] float64 self energies (Hartree) in `species` order."""
    out: dict[int, tuple[str, float]] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*([A-Za-z]+)\s*,\s*(\d+)\s*=\s*(\S+)\s*", line)
        if not m:
            raise AniFileError(f"{name}:{i}: expected 'Element,index=energy', got {line!r}")
        try:
            out[int(m.group(2))] = (m.group(1), float(m.group(3)))
        except ValueError:
            raise AniFileError(f"{name}:{i}: {m.group(3)!r} is not a number") from None
    got = tuple(out[k][0] for k in sorted(out))
    if got != tuple(species) or sorted(out) != list(range(len(species))):
        raise AniFileError(f"{name}: self energies for {got} (indices {sorted(out)}); the AEV file's species are "
                           f"{tuple(species)}")
    return np.array([out[k][1] for k in range(len(species))], np.float64)


_TOKEN = re.compile(r"\s*(?:(?P<punct>[=;\[\]$])|(?P<word>[A-Za-z0-9_.+\-:]+))")


def _tokens(text: str, name: str) -> list[str]:
    toks, pos = [], 0
    text = text.rstrip("\x00 \n\t\r")
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise AniFileError(f"{name}: unexpected character {text[pos:pos + 10]!r} at offset {pos}")
        toks.append(m.group("punct") or m.group("word"))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return toks


def decompress_nnf(data: bytes, name: str) -> str:
    """The .nnf container (`<size>=\\n` + bzip2) -> the description text."""
    head, sep, rest = data.partition(b"=")
    if not sep or not head.strip().isdigit():
        raise AniFileError(f"{name}: not a NeuroChem network file (expected '<bytes>=' then a bzip2 stream)")
    rest = rest[1:] if rest[:1] == b"\n" else rest
    dec = bz2.BZ2Decompressor()
    try:
        out = dec.decompress(rest, max_length=_MAX_NNF_TEXT)
    except (OSError, EOFError):
        raise AniFileError(f"{name}: the bzip2 stream is corrupt") from None
    if not dec.eof:
        raise AniFileError(f"{name}: the description is truncated or larger than {_MAX_NNF_TEXT} bytes")
    return _text(out, name)


def parse_nnf(text: str, name: str) -> tuple[str, int, list[dict]]:
    """Description text -> (element, inputsize, [{nodes, activation, blocksize, weights: (file, count),
    biases: (file, count), ...}] per layer)."""
    t = _tokens(text, name)
    i = 0

    def expect(tok):
        nonlocal i
        if i >= len(t) or t[i] != tok:
            raise AniFileError(f"{name}: expected {tok!r} at token {i}, got {t[i] if i < len(t) else 'the end'!r}")
        i += 1

    def word():
        nonlocal i
        if i >= len(t) or t[i] in "=;[]$":
            raise AniFileError(f"{name}: expected a value at token {i}")
        i += 1
        return t[i - 1]

    expect("inputsize"), expect("=")
    try:
        inputsize = int(word())
    except ValueError:
        raise AniFileError(f"{name}: inputsize is not an integer") from None
    expect(";"), expect("atom_net")
    element = word()
    expect("$")
    layers = []
    while i < len(t) and t[i] == "layer":
        i += 1
        expect("[")
        layer: dict = {}
        while i < len(t) and t[i] != "]":
            key = word()
            expect("=")
            if i < len(t) and t[i] == "nan":  # NeuroChem writes '-nan' for unused fields
                i += 1
                layer[key] = float("nan")
                expect(";")
                continue
            val = word()
            if i < len(t) and t[i] == "[":  # FILE:<name>[<count>]
                expect("[")
                count = word()
                expect("]")
                if not val.startswith("FILE:") or not count.isdigit():
                    raise AniFileError(f"{name}: bad file reference {val}[{count}] for {key}")
                layer[key] = (val[len("FILE:"):], int(count))
            else:
                try:
                    layer[key] = int(val) if re.fullmatch(r"[+-]?\d+", val) else float(val)
                except ValueError:
                    raise AniFileError(f"{name}: {key} = {val!r} is not a number") from None
            expect(";")
        expect("]")
        for k in ("nodes", "activation", "blocksize", "weights", "biases"):
            if k not in layer:
                raise AniFileError(f"{name}: layer {len(layers) + 1} has no {k!r}")
        layers.append(layer)
    expect("$")
    if i != len(t):
        raise AniFileError(f"{name}: trailing tokens after the network: {t[i:i + 5]}")
    if not layers:
        raise AniFileError(f"{name}: no layers")
    return element, inputsize, layers


def read_float32(data: bytes, count: int, name: str) -> np.ndarray:
    """Raw little-endian float32 -> [count], refusing any other byte count."""
    if len(data) != 4 * count:
        raise AniFileError(f"{name}: {len(data)} bytes, but its description says {count} float32 values "
                           f"({4 * count} bytes)")
    a = np.frombuffer(data, "<f4").astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise AniFileError(f"{name}: non-finite values")
    return a


def _network(src: _Source, model_dir: str, element: str, aev_length: int) -> tuple[Layer, ...]:
    rel = f"{model_dir}/networks/ANN-{element}.nnf"
    name = src.name(rel)
    got, inputsize, specs = parse_nnf(decompress_nnf(src.read(rel, 1 << 16), name), name)
    if got != element:
        raise AniFileError(f"{name}: describes element {got!r}, expected {element!r}")
    if inputsize != aev_length:
        raise AniFileError(f"{name}: inputsize={inputsize}, but the AEV file gives {aev_length}")
    layers, width = [], inputsize
    for k, s in enumerate(specs, 1):
        nodes, block = s["nodes"], s["blocksize"]
        if block != width:
            raise AniFileError(f"{name}: layer {k} blocksize={block}, but the previous layer has {width} outputs")
        if s["activation"] not in ACTIVATIONS:
            raise AniFileError(f"{name}: layer {k} activation {s['activation']} (known: {ACTIVATIONS})")
        (wf, wn), (bf, bn) = s["weights"], s["biases"]
        if wn != nodes * block or bn != nodes:
            raise AniFileError(f"{name}: layer {k} weights[{wn}] / biases[{bn}] do not match nodes={nodes}, "
                               f"blocksize={block}")
        for f in (wf, bf):
            if "/" in f or "\\" in f or f.startswith("."):
                raise AniFileError(f"{name}: layer {k} names file {f!r} outside its folder")
        w = read_float32(src.read(f"{model_dir}/networks/{wf}"), wn, src.name(f"{model_dir}/networks/{wf}"))
        b = read_float32(src.read(f"{model_dir}/networks/{bf}"), bn, src.name(f"{model_dir}/networks/{bf}"))
        layers.append(Layer(w.reshape(nodes, block), b, ACTIVATIONS[s["activation"]]))
        width = nodes
    if width != 1 or layers[-1].activation != "identity":
        raise AniFileError(f"{name}: the last layer must output one linear value (an atomic energy); got width "
                           f"{width}, activation {layers[-1].activation}")
    return tuple(layers)


def load(path: str, ensemble_size: int = ENSEMBLE_SIZE) -> AniFiles:
    """The ANI-1x ensemble from the torchani 2.2.4 wheel or its `ani-1x_8x` folder."""
    src = _Source(path)
    aev = parse_params(_text(src.read(PARAMS_FILE, 1 << 16), src.name(PARAMS_FILE)), src.name(PARAMS_FILE))
    sae = parse_sae(_text(src.read(SAE_FILE, 1 << 16), src.name(SAE_FILE)), src.name(SAE_FILE), aev.species)
    models = tuple({e: _network(src, f"train{m}", e, aev.length) for e in aev.species} for m in range(ensemble_size))
    return AniFiles(aev, sae, models, path)
