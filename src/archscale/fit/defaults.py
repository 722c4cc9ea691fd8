"""The fit settings' defaults, read from the config schema (src/archscale/schemas/
config.schema.json), the one place they are written, so a library call, `archscale fit` and a
study all default to the same values."""
from __future__ import annotations

from typing import Any

from archscale.schema import section_defaults

#: The schema's defaults for the `fit` section.
FIT_DEFAULTS: dict[str, Any] = section_defaults("fit")

#: The r = r_mlp/attn span of the runs a conditional fit uses, unless told otherwise.
DEFAULT_R_RANGE: tuple[float, float] = tuple(float(v) for v in FIT_DEFAULTS["r_range"])
