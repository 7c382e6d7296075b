import importlib
import subprocess
import sys

import pytest

from shuffle import kernels


@pytest.mark.parametrize("name", ["combine", "hashing", "msgpack_records", "pointers", "recordbuf"])
def test_compiled_and_twin_export_the_same_public_names(name):
    compiled = importlib.import_module(f"shuffle._native.{name}")
    twin = importlib.import_module(f"shuffle._twins.{name}")
    assert public_names(compiled, name) == public_names(twin, name)


def public_names(module, name):
    """Constants, and the functions and classes the module defines itself (not what it imports)."""
    names = set()
    for attr in dir(module):
        value = getattr(module, attr)
        if attr.startswith("_"):
            continue
        if attr.isupper() or getattr(value, "__module__", "").endswith(f".{name}"):
            names.add(attr)
    return names


def test_a_missing_compiled_kernel_is_one_readable_line(monkeypatch):
    monkeypatch.setattr(kernels, "PURE_PYTHON", False)
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name.startswith("shuffle._native."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(ImportError) as info:
        kernels.load("hashing")
    message = str(info.value)
    assert "\n" not in message and "pip install" in message and "SHUFFLE_PUREPYTHON=1" in message


def test_purepython_switch_selects_the_twins():
    code = "from shuffle.kernels import load; print(load('pointers').__name__)"
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "SHUFFLE_PUREPYTHON": "1"},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "shuffle._twins.pointers"
