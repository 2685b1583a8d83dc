"""Builds jopt's CPU kernels on first use and registers them with XLA.

The kernels are C++ handlers for XLA's foreign function interface (``jax.ffi``). They
are compiled on the user's machine, the first time a step asks for one, with the
system's C++ compiler and the FFI headers that ship with jaxlib, for the host's
instruction set (``-march=native``). The shared library is cached under the user's
cache directory, keyed by the source, the flags, the compiler, jaxlib's version and
the CPU, so a machine compiles it once (about 20 s on a 2-core CPU). Writes go to a
temporary file that is renamed, so a build interrupted half-way is never loaded.

Without a compiler, or with ``JOPT_KERNELS=0`` in the environment, nothing is built
and jopt runs the same updates as XLA loops (the same numbers to an ulp, slower); the
reason is in
:func:`jopt.kernels.status`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import jax

from jopt.kernels import rules

SOURCES = ("cpu_kernels.cc",)
TARGETS = (  # XLA custom-call targets, each exported under its own name
    *(target for kernel in rules.KERNELS for target in kernel.targets()),
    "jopt_sum_squares_f32",
    "jopt_after_all",
)
FLAGS = (
    "-O3",
    "-march=native",
    "-fno-math-errno",  # lets sqrt vectorize; inputs are never negative here
    "-ffp-contract=off",  # only the explicit std::fma calls, where XLA contracts
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-w",
)

_lock = threading.Lock()
_state: dict[str, object] = {}


def _cache_root() -> Path:
    if "JOPT_KERNELS_CACHE" in os.environ:
        return Path(os.environ["JOPT_KERNELS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jopt" / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_identity() -> str:
    """What -march=native depends on: the CPU model and its feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _key(compiler: str, sources: list[bytes]) -> str:
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=False
    ).stdout
    h = hashlib.sha256()
    for part in (*sources, " ".join(FLAGS).encode(), version.encode()):
        h.update(part)
    h.update(jax.ffi.include_dir().encode())
    h.update(_jaxlib_version().encode())
    h.update(_cpu_identity().encode())
    h.update(platform.machine().encode())
    return h.hexdigest()[:24]


def _jaxlib_version() -> str:
    import jaxlib

    return str(getattr(jaxlib, "__version__", "unknown"))


def _build(compiler: str) -> Path:
    here = Path(__file__).parent
    sources = [(here / name).read_bytes() for name in SOURCES]
    out = _cache_root() / _key(compiler, sources) / "libjopt_kernels.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        cmd = [
            compiler,
            *FLAGS,
            f"-I{jax.ffi.include_dir()}",
            *(str(here / name) for name in SOURCES),
            "-o",
            tmp,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            errors = " / ".join(done.stderr.strip().splitlines()[-5:]) or "no output"
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {done.returncode}): {errors}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load() -> bool:
    """Builds (once per machine) and registers the CPU kernels; False if unavailable."""
    with _lock:
        if "ok" in _state:
            return bool(_state["ok"])
        reason = _load_locked()
        _state["ok"] = reason is None
        _state["reason"] = reason or "built and registered"
        if reason is not None and os.environ.get("JOPT_KERNELS", "1") != "0":
            warnings.warn(
                f"jopt: CPU kernels unavailable, using XLA loops instead ({reason})",
                RuntimeWarning,
                stacklevel=3,
            )
        return reason is None


def _load_locked() -> str | None:
    if os.environ.get("JOPT_KERNELS", "1") == "0":
        return "disabled by JOPT_KERNELS=0"
    if sys.platform == "win32":
        return "not supported on Windows"
    compiler = _compiler()
    if compiler is None:
        return "no C++ compiler found (set CXX)"
    try:
        path = _build(compiler)
        lib = ctypes.cdll.LoadLibrary(str(path))
        for target in TARGETS:
            jax.ffi.register_ffi_target(
                target, jax.ffi.pycapsule(getattr(lib, target)), platform="cpu"
            )
    except (OSError, RuntimeError, AttributeError) as e:
        return str(e)
    _state["path"] = str(path)
    return None


def status() -> str:
    """Why the kernels are (not) in use; builds them if nobody asked yet.

    Example:
        >>> import jopt
        >>> jopt.kernels.status()  # doctest: +ELLIPSIS
        'built and registered (.../libjopt_kernels.so)'
    """
    load()
    return str(_state["reason"]) + (f" ({_state['path']})" if "path" in _state else "")
