"""vopd-bench: measure and close the regional-to-global perception gap of multimodal LLMs.

The Python API (`vopd_bench.api`; importing the package stays cheap: nothing here imports torch or pandas):

    vopd_bench.evaluate(model=..., tasks=[...], views=[...], out=...)  -> Run  (= `vopd-bench eval`)
    vopd_bench.load_run(path)                                          -> Run  (.config, .results, .samples, .gap(task))
    vopd_bench.load_curve(path)                                        -> pandas.DataFrame
    vopd_bench.train(recipe, **overrides)                              -> TrainingRun  (= `vopd-bench train`)

`vopd_bench.evaluate` and `vopd_bench.train` are also the package's modules of those names (`vopd_bench.evaluate
.EvalConfig`, `vopd_bench.train.config`, ...): the package makes those two modules callable, so both uses hold
whatever was imported first.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "TrainingRun", "evaluate", "load_curve", "load_run", "load_training", "train"]
_API = {"Run", "TrainingRun", "load_curve", "load_run", "load_training"}
_CALLABLE = ("evaluate", "train")  # submodules that are also the API functions of the same name

if TYPE_CHECKING:
    from vopd_bench.api import Run, TrainingRun, evaluate, load_curve, load_run, load_training, train


class _CallableModule(types.ModuleType):
    """`vopd_bench.evaluate` / `vopd_bench.train`: the module, and calling it calls `vopd_bench.api.<name>`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from vopd_bench import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The class of this package: when the import system binds the submodule `evaluate` or `train` here, that
    module becomes callable (its attributes are untouched)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLABLE and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:  # lazy: the API's imports happen on first use
    if name in _CALLABLE:
        return importlib.import_module(f"{__name__}.{name}")  # bound (and made callable) by _Package.__setattr__
    if name in _API:
        from vopd_bench import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
