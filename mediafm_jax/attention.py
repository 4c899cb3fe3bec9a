"""Attention with key-padding lengths: a fused kernel on the CPU, the library's elsewhere.

On the CPU, ``jax.nn.dot_product_attention`` compiles to separate XLA passes over the
whole [B, N, T, S] score tensor and runs at about a fifth of PyTorch's fused CPU kernel
(issue 24, docs/PERFORMANCE.md). ``csrc/attention_cpu.cc`` is the fused version (one query
block's scores stay in cache; the backward recomputes them from the log-sum-exp), called
as an XLA FFI custom call. It is compiled with the system C++ compiler the first time it is
needed (``make install`` does it ahead) into a per-user cache. GPU and TPU keep
``jax.nn.dot_product_attention`` (cuDNN flash attention on GPU), chosen per platform when
the program is lowered.

Shape suffixes: b batch, t queries, s keys, n heads, d head dim.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

SOURCE = Path(__file__).parent / "csrc" / "attention_cpu.cc"
FLAGS = ("-O3", "-march=native", "-ffast-math", "-std=c++17", "-shared", "-fPIC")
QUIET = ("-Wno-attributes", "-Wno-return-type")
FUSED_DTYPES = (jnp.float32, jnp.float64)
# the model's logical axes as mesh axes (sharding.LOGICAL_RULES["batch"], ["heads"])
BATCH_AXES, HEAD_AXIS = ("data", "fsdp"), "tensor"


def cache_dir() -> Path:
    root = os.environ.get("MEDIAFM_KERNEL_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root) if root else Path.home() / ".cache" / "mediafm_jax"


def _cpu_features() -> str:
    """The CPU's feature flags (-march=native code must not run on a CPU without them)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return next((line for line in lines if line.startswith(("flags", "Features"))), "")


def library_path() -> Path:
    """Where the kernel for this source, jaxlib and CPU is (or will be) built."""
    import jaxlib

    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(f"{jaxlib.__version__} {platform.machine()} {' '.join(FLAGS)}".encode())
    key.update(_cpu_features().encode())
    return cache_dir() / f"attention_cpu-{key.hexdigest()[:16]}.so"


def build() -> Path:
    """Compile the kernel (once; an existing build for this source is reused).

    Written to a temporary name and renamed, so parallel first uses never load half a file.
    """
    target = library_path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    compiler = os.environ.get("CXX", "g++")
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    cmd = [compiler, *FLAGS, *QUIET, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            raise RuntimeError(f"{compiler} failed: {run.stderr.strip()[-500:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.cache
def _register(path: str) -> None:
    lib = ctypes.cdll.LoadLibrary(path)
    for name, symbol in (("fwd", lib.MediafmAttentionFwd), ("bwd", lib.MediafmAttentionBwd)):
        jax.ffi.register_ffi_target(
            f"mediafm_attention_{name}", jax.ffi.pycapsule(symbol), platform="cpu"
        )


@functools.cache
def fused_available() -> bool:
    """Build (if needed), load and register the CPU kernel; False, with a warning, if not."""
    try:
        _register(str(build()))
    except (OSError, RuntimeError) as error:
        warnings.warn(
            f"fused CPU attention unavailable ({error}); using XLA's attention, about 3x "
            "slower on the CPU. It needs a C++17 compiler (g++, or set CXX).",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def _forward_call(q_btnd, k_bsnd, v_bsnd, lengths_b):
    b, t, n, d = q_btnd.shape
    outputs = (
        jax.ShapeDtypeStruct(q_btnd.shape, q_btnd.dtype),
        jax.ShapeDtypeStruct((b, n, t), q_btnd.dtype),
    )
    call = jax.ffi.ffi_call("mediafm_attention_fwd", outputs)
    return call(q_btnd, k_bsnd, v_bsnd, lengths_b, lengths_b, scale=np.float64(d**-0.5))


@jax.custom_vjp
def fused_attention(q_btnd, k_bsnd, v_bsnd, lengths_b):
    """The CPU kernel on one shard; self-attention, ``lengths_b`` valid queries and keys."""
    return _forward_call(q_btnd, k_bsnd, v_bsnd, lengths_b)[0]


def _fused_fwd(q_btnd, k_bsnd, v_bsnd, lengths_b):
    out_btnd, lse_bnt = _forward_call(q_btnd, k_bsnd, v_bsnd, lengths_b)
    return out_btnd, (q_btnd, k_bsnd, v_bsnd, out_btnd, lse_bnt, lengths_b)


def _fused_bwd(residuals, dout_btnd):
    q_btnd, k_bsnd, v_bsnd, out_btnd, lse_bnt, lengths_b = residuals
    outputs = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q_btnd, k_bsnd, v_bsnd))
    call = jax.ffi.ffi_call("mediafm_attention_bwd", outputs)
    scale = np.float64(q_btnd.shape[-1] ** -0.5)
    dq, dk, dv = call(
        q_btnd, k_bsnd, v_bsnd, out_btnd, lse_bnt, dout_btnd, lengths_b, lengths_b, scale=scale
    )
    return dq, dk, dv, None


fused_attention.defvjp(_fused_fwd, _fused_bwd)


def _sharded_fused(q_btnd, k_bsnd, v_bsnd, lengths_b):
    """The kernel per shard: batch over (data, fsdp), heads over tensor, as the model's
    activations are (a custom call would otherwise be gathered onto every device)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return fused_attention(q_btnd, k_bsnd, v_bsnd, lengths_b)
    batch = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    head = HEAD_AXIS if HEAD_AXIS in mesh.axis_names else None
    spec = PartitionSpec(batch, None, head, None)
    return jax.shard_map(
        fused_attention,
        mesh=mesh,
        in_specs=(spec, spec, spec, PartitionSpec(batch)),
        out_specs=spec,
        check_vma=False,  # the custom call's outputs carry no varying-axes type
    )(q_btnd, k_bsnd, v_bsnd, lengths_b)


def _divides(mesh, axes, size: int) -> bool:
    return size % int(np.prod([mesh.shape[a] for a in axes if a in mesh.axis_names])) == 0


def use_fused(q_btnd, implementation: str | None) -> bool:
    """Whether this call may take the CPU kernel (the platform is decided at lowering)."""
    if implementation is not None or q_btnd.dtype not in FUSED_DTYPES:
        return False
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and not (
        _divides(mesh, BATCH_AXES, q_btnd.shape[0])
        and _divides(mesh, (HEAD_AXIS,), q_btnd.shape[2])
    ):
        return False
    return "cpu" in {d.platform for d in jax.devices()} and fused_available()


def dot_product_attention(q_btnd, k_bsnd, v_bsnd, lengths_b, implementation: str | None = None):
    """Softmax attention of the first ``lengths_b`` queries over the first ``lengths_b`` keys.

    ``implementation``: None picks per platform (the fused kernel on the CPU, the library's
    choice elsewhere, cuDNN on GPU when it applies); "xla" or "cudnn" force the library's.
    Padded queries get zeros, as the library gives.
    """

    def library(q, k, v, lengths):
        return jax.nn.dot_product_attention(
            q,
            k,
            v,
            query_seq_lengths=lengths,
            key_value_seq_lengths=lengths,
            implementation=implementation,
        )

    if not use_fused(q_btnd, implementation):
        return library(q_btnd, k_bsnd, v_bsnd, lengths_b)
    return jax.lax.platform_dependent(
        q_btnd, k_bsnd, v_bsnd, lengths_b, cpu=_sharded_fused, default=library
    )


if __name__ == "__main__":  # `python -m mediafm_jax.attention`: build ahead (make install)
    if not fused_available():
        sys.exit(0)  # warned; the library's attention works without it
    print(f"fused CPU attention: {library_path()}")
