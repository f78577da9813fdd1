"""`import ltaug` registers ltaug's CIFAR ResNets with timm without importing torch itself.

timm's registry is filled by importing the module that defines the models (ltaug.classify.models), and that
imports torch, which `import ltaug` must not do (`ltaug --help` stays fast). So: when timm is already imported the
models are registered at once; otherwise a one-shot import hook runs the registration right after timm's own
import finishes, whoever imports it. `timm.create_model("local-dir:RUN/classifier-NAME")` then finds the
architecture its config.json names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys


def _register() -> None:
    importlib.import_module("ltaug.classify.models")


class _AfterTimm(importlib.abc.MetaPathFinder):
    """Finds timm through the other finders, then wraps its loader so that the registration follows."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _ThenRegister(spec.loader)
                return spec
        return None


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _uninstall()  # one shot (a bare importlib.util.find_spec("timm"), as diffusers does, consumes nothing)
        _register()

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.loader, name)


def _uninstall() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterTimm)]


def install() -> None:
    if "timm" in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimm())
