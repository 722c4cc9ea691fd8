"""The registry of conditional-law forms: every place that needs the list of forms reads it here.

A form is one `LawForm` object in one module (see `base.py`). The modules of this package
register their form when imported, and the registry imports them all on first use, so a new
built-in form is one new file here. A form defined elsewhere (a plugin, a test) calls
`register(form)` itself. The fit, the prediction, conditional.json, the plots, the `--form`
choices of `archscale fit` and the config's `fit.form` check (archscale.config) all ask this
registry, so none of them lists forms of its own.
"""
from __future__ import annotations

import importlib
import pkgutil

from archscale.fit.forms.base import LawForm, Optimum, Reported, Split

__all__ = ["LawForm", "Optimum", "Reported", "Split", "get", "names", "register", "unregister"]

_FORMS: dict[str, LawForm] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    """Import every module of this package once; each built-in form registers itself."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")


def register(form: LawForm) -> LawForm:
    """Make `form` available under `form.name`; returns it (so a module can write
    `FORM = register(MyForm())`). A second, different form under a taken name is an error."""
    if not isinstance(form, LawForm):
        raise TypeError(f"register() takes a LawForm instance (archscale.fit.forms.base), "
                        f"got {type(form).__name__}")
    _load_builtins()
    if not form.name or not isinstance(form.name, str):
        raise ValueError(f"a law form needs a non-empty string name, got {form.name!r}")
    held = _FORMS.get(form.name)
    if held is not None and held is not form:
        raise ValueError(f"a law form named {form.name!r} is already registered "
                         f"({type(held).__module__}.{type(held).__name__}); pick another name "
                         "or unregister() the old one first")
    _FORMS[form.name] = form
    return form


def unregister(name: str) -> None:
    """Remove a registered form (tests that register their own forms clean up with this)."""
    _load_builtins()
    if name not in _FORMS:
        raise KeyError(f"no law form named {name!r} is registered; registered: {names()}")
    del _FORMS[name]


def get(name: str) -> LawForm:
    """The form registered under `name`; an unknown name is an error listing the known ones."""
    _load_builtins()
    try:
        return _FORMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown law form {name!r}; registered forms: {list(names())} "
                         "(a new form is a module in archscale/fit/forms/ that calls "
                         "register(), see docs/architecture.md)") from None


def names() -> tuple[str, ...]:
    """The registered forms' names: the built-ins (alphabetical), then others as registered."""
    _load_builtins()
    return tuple(_FORMS)
