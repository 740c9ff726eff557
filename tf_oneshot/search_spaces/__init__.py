"""Search spaces behind one interface (`base.SearchSpace`), and the registry.

This registry is the one place outside a space's own folder that names the
built-in spaces. Every command takes `--space=NAME` for a registered space or
`--space=module:Attribute` / `--space=path/to/file.py:Attribute` for a user's
own space, which needs no edit to the package.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from typing import Any

from tf_oneshot.errors import UserError
from tf_oneshot.search_spaces.base import ENUMERATION_LIMIT, Architecture, Cost, RestrictedSpace, SearchSpace
from tf_oneshot.search_spaces.decisions import Decision, OneOf, SubsetOf

# name -> "module:Class" of the built-in spaces (imported on first use).
BUILTIN = {
    "bender_cell": "tf_oneshot.search_spaces.bender_cell:CellSpace",
    "darts64": "tf_oneshot.search_spaces.darts64:Darts64Space",
    "spos_blocks": "tf_oneshot.search_spaces.spos_blocks:SposBlocksSpace",
    "spos_quant_resnet18": "tf_oneshot.search_spaces.spos_quant:SposQuantResNet18Space",
    "spos_quant_resnet34": "tf_oneshot.search_spaces.spos_quant:SposQuantResNet34Space",
    "spos_channels": "tf_oneshot.search_spaces.spos_blocks:SposChannelsSpace",
    "spos_blocks_channels": "tf_oneshot.search_spaces.spos_blocks:SposBlocksChannelsSpace",
}
DEFAULT_SPACE = "bender_cell"
_LOADED: dict[str, type] = {}


def register(cls: type) -> type:
    """Registers a SearchSpace class under its `name` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, SearchSpace)) or not cls.name:
        raise UserError(f"{cls!r} is not a SearchSpace class with a name.")
    _LOADED[cls.name] = cls
    return cls


def _import_spec(spec: str) -> Any:
    """Imports "module:attr" or "path/file.py:attr"."""
    if ":" not in spec:
        raise UserError(
            f"unknown search space {spec!r}; choose a registered one ({', '.join(sorted(BUILTIN))}) or "
            "give your own as 'module:Attribute' or 'path/to/file.py:Attribute'."
        )
    where, attr = spec.rsplit(":", 1)
    try:
        if where.endswith(".py"):
            path = os.path.abspath(where)
            if not os.path.isfile(path):
                raise UserError(f"--space={spec}: no file {path}.")
            name = "tf_oneshot_user_space_" + os.path.splitext(os.path.basename(path))[0]
            module = sys.modules.get(name)
            if module is None or getattr(module, "__file__", None) != path:
                loader_spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[name] = module
                try:
                    loader_spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]  # a fixed file loads afresh
                    raise
            spec = f"{path}:{attr}"
        else:
            module = importlib.import_module(where)
    except UserError:
        raise
    except ImportError as e:
        raise UserError(f"--space={spec}: cannot import {where!r} ({e}).") from None
    except SyntaxError as e:
        raise UserError(f"--space={spec}: {e.filename} line {e.lineno} is not Python ({e.msg}); fix the file.") from None
    except Exception as e:  # the user's module failed while loading: its first line, not a traceback
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"--space={spec}: importing {where!r} raised {type(e).__name__}: {first}") from None
    if not hasattr(module, attr):
        raise UserError(f"--space={spec}: {where!r} has no attribute {attr!r}.")
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, SearchSpace)):
        raise UserError(f"--space={spec}: {attr} is not a tf_oneshot.SearchSpace subclass.")
    if not cls.name:
        raise UserError(f"--space={spec}: {attr} has no `name`; give it the class variable "
                        "`name: ClassVar[str] = \"my_space\"`.")
    if "__dataclass_fields__" not in vars(cls):
        raise UserError(f"--space={spec}: {attr} is not a dataclass; decorate it with "
                        "@dataclasses.dataclass(frozen=True) (its fields are the space's arguments).")
    if cls.name not in BUILTIN:
        cls._tf_oneshot_spec = spec  # recorded in configs, so later commands find it
    return cls


def space_class(spec: str) -> type:
    """The SearchSpace class for a registered name or an import spec."""
    if spec in _LOADED:
        return _LOADED[spec]
    if spec in BUILTIN:
        cls = _import_spec(BUILTIN[spec])
    else:
        cls = _import_spec(spec)
    _LOADED[spec] = cls
    return cls


def space_fields(cls: type) -> tuple[str, ...]:
    """The constructor fields of a space class."""
    return tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else ()


def get_space(name: str = DEFAULT_SPACE, **kwargs: Any) -> SearchSpace:
    """Builds the search space `name` (registered, or "module:Attr") with keyword arguments.

    Raises:
        UserError: an unknown space, or an argument the space does not take.
    """
    cls = space_class(name)
    fields = space_fields(cls)
    unknown = [k for k in kwargs if k not in fields]
    if unknown:
        raise UserError(
            f"search space {cls.name!r} takes no {unknown[0]!r}; it takes {', '.join(fields) or 'nothing'}."
        )
    kwargs = {k: _typed(cls, k, v) for k, v in kwargs.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"search space {cls.name!r}: {e}") from None


def _typed(cls: type, name: str, value: Any) -> Any:
    """`value` (from --space_args: an int, float or string) as the type of field `name`'s default.

    Only fields whose default is an int, float or bool are converted.

    Raises:
        UserError: naming the field and its type when the value is not one.
    """
    default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    kind = type(default)
    if kind not in (int, float, bool):
        return value
    text = value.strip() if isinstance(value, str) else value
    try:
        if kind is bool:
            return text if isinstance(text, bool) else {"true": True, "false": False}[str(text).lower()]
        if isinstance(text, bool):
            raise ValueError(text)
        converted = kind(text)
        if float(text) != converted:  # 2.5 is no int
            raise ValueError(text)
        return converted
    except (KeyError, ValueError, TypeError):
        article = "an" if kind is int else "a"
        raise UserError(f"search space {cls.name!r}: {name}={value!r} is not {article} {kind.__name__}; "
                        f"give e.g. --space_args={name}={default}.") from None


def space_from_config(config: Mapping) -> SearchSpace:
    """Inverse of `space.to_config()`."""
    name = config.get("space")
    spec = config.get("class") or name
    if not isinstance(spec, str):
        raise UserError(f"a search-space config needs a 'space' name; got {dict(config)!r}.")
    cls = space_class(spec)
    restricted = config.get("restricted_to")
    space = cls.from_config({k: v for k, v in config.items() if k != "restricted_to"})
    if restricted:
        space = space.restrict({n: [tuple(x) if isinstance(x, list) else x for x in values]
                                for n, values in restricted})
    return space


def known_spaces() -> tuple[str, ...]:
    return tuple(sorted(set(BUILTIN) | set(_LOADED)))


def __getattr__(name: str) -> Any:
    # `tf_oneshot.search_spaces.CellSpace` and friends, for code written
    # before spaces were plug-ins: looked up in the built-in space modules.
    for spec in BUILTIN.values():
        module = importlib.import_module(spec.split(":")[0])
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTIN",
    "DEFAULT_SPACE",
    "ENUMERATION_LIMIT",
    "Architecture",
    "Cost",
    "Decision",
    "OneOf",
    "RestrictedSpace",
    "SearchSpace",
    "SubsetOf",
    "get_space",
    "known_spaces",
    "register",
    "space_class",
    "space_fields",
    "space_from_config",
]
