"""The Lua scripts s13eir runs in Redis, kept as ``.lua`` files in ``lua/`` beside this
module (read, reviewed and diffed as Lua, each with its KEYS and ARGV at the top), and the
one way to load them. The text is read once per process; redis-py's ``register_script``
sends it on the first NOSCRIPT and runs it by SHA after that."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

__all__ = ["lua"]


@cache
def lua(*names: str) -> str:
    """The named scripts of ``lua/``, joined in the order given: ``lua("helpers", "flip")``
    is the flip script with the helpers it calls defined first."""
    base = files(__package__ or "s13eir.backends") / "lua"
    return "".join((base / f"{name}.lua").read_text(encoding="utf-8") for name in names)
