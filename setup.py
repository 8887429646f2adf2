"""reed_jax: REED (flexible representation guidance for diffusion/flow models) in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="reed_jax",
    version="0.1.0",
    description="REED: diffusion and flow models trained with flexible representation guidance, in JAX/Flax",
    python_requires=">=3.11",
    packages=find_packages(include=["reed_jax", "reed_jax.*"]),
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12",
        "grain>=0.2.18",
        "array_record>=0.8",
        "tensorflow-datasets>=4.9",
        "ml_collections>=1.1",
        "clu>=0.0.12",
        "tensorflow-cpu>=2.21",  # clu's TensorBoard writer
        "tensorboard>=2.21",
        "numpy>=2.0",
        "scipy>=1.14",
        "pillow>=10",
        "tqdm>=4.66",
        "matplotlib>=3.9",
        "scikit-learn>=1.5",  # the embedded default data (load_digits)
        "rdkit>=2024.9",  # the molecule track: bonds from 3D, sanitisation, SDF, MMFF
    ],
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3"]},
)
