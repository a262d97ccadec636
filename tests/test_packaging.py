"""The package list in pyproject.toml names every package of the tree: an editable install (make test) finds a
forgotten subpackage anyway, while the image's regular install would ship without it."""

from __future__ import annotations

import tomllib

from .support import ROOT


def test_every_package_directory_is_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("gateway", "dev_idp", "upstream_demo")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found == listed
