"""The README's claims run: its program, its examples (doctests) and the names it cites."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import re
from pathlib import Path

import jax
import pytest

import jopt

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_quickstart_program_fits_the_line():
    program = next(b for b in _python_blocks(README.read_text()) if "def train_step" in b)
    output = io.StringIO()
    user_defaults = (jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"))
    with contextlib.redirect_stdout(output), user_defaults[0], user_defaults[1]:
        exec(compile(program, "README.md", "exec"), {})
    assert output.getvalue().strip() == "w = 2.000, b = 1.000"


def _cited_names(text: str) -> set[str]:
    return set(re.findall(r"\bjopt(?:\.[A-Za-z_][A-Za-z0-9_]*)+", text))


@pytest.mark.parametrize("name", sorted(_cited_names(README.read_text())))
def test_every_cited_name_exists(name):
    obj = jopt
    for part in name.split(".")[1:]:
        if part in {"py", "md"}:
            return  # a file name such as jopt/base.py
        if not hasattr(obj, part) and inspect.ismodule(obj):  # a subpackage not imported
            importlib.import_module(f"{obj.__name__}.{part}")
        assert hasattr(obj, part), f"README cites {name}, but {part} does not exist"
        obj = getattr(obj, part)
