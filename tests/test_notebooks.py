"""The notebooks in ``notebooks/`` run top to bottom, so they cannot rot.

Each notebook is executed with nbclient in its fast mode (``JOPT_NOTEBOOK_FAST=1``: fewer
epochs, a subset of MNIST), in a kernel started with the interpreter running the tests (a
kernel spec written for the session, so a fresh virtual environment needs no
``ipykernel install``). A cell that raises fails the test; so does a cell that runs longer
than ``CELL_TIMEOUT``. The committed copies are also checked: executed without errors,
small, and listed in the top-level ``README.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
KERNEL = "jopt-notebook-test"
CELL_TIMEOUT = 240
"""Seconds one cell may run in fast mode (the slowest takes about 15 s on two cores)."""
MAX_BYTES = 150_000
"""The largest committed notebook, outputs included."""


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 7, f"expected the seven notebooks in {NOTEBOOKS_DIR}"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a kernel spec that runs ``sys.executable`` (this interpreter)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL / "kernel.json"
    spec.parent.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    return root


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, kernel_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))  # searched first: finds KERNEL
    monkeypatch.setenv("JOPT_NOTEBOOK_FAST", "1")  # the kernel inherits the environment
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{path.name}: a cell failed in fast mode:\n{error}", pytrace=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook(path: Path) -> None:
    """Committed with outputs, none of them an error, small, and fast mode in cell one."""
    size = path.stat().st_size
    assert size <= MAX_BYTES, f"{path.name} is {size:,} bytes (> {MAX_BYTES:,}): shrink the outputs"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert "JOPT_NOTEBOOK_FAST" in code[0].source, f"{path.name}: the first code cell must read it"
    for number, cell in enumerate(code, 1):
        assert cell.execution_count is not None, f"{path.name}: code cell {number} not executed"
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{path.name}: code cell {number} was committed with an error"
        assert "execution" not in cell.metadata, f"{path.name}: strip the timing metadata"


def test_readme_lists_every_notebook() -> None:
    readme = (NOTEBOOKS_DIR.parent / "README.md").read_text()
    missing = [p.name for p in NOTEBOOKS if f"(notebooks/{p.name})" not in readme]
    assert not missing, f"README.md does not link {missing}"
