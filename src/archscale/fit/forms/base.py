"""What a conditional-law form is: one object that knows its formula, coefficients, model,
Jacobian, starting point, optimum, normalisation and how to split the loss for the plots.

`fit_conditional` fits the form's free parameters `p` (Levenberg-Marquardt with the analytic
Jacobian); `report` turns them into the coefficients conditional.json stores (fixing any scale
the data cannot identify), and everything downstream (prediction, the optimum x*, r*, the
bootstrap, the plots) works from those reported coefficients through the form again. Nothing
outside the form assumes how many coefficients it has or what they are called.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

#: The architecture variables every form is written in, and whose optimum it reports.
AXES = ("x", "r")


@dataclass(frozen=True)
class Optimum:
    """The optimum of the loss along one axis, whether it is a minimum, and the condition
    for that in words with the fitted values (for the warning when it is not)."""

    star: float
    is_minimum: bool
    condition: str


@dataclass(frozen=True)
class Reported:
    """The fitted parameters as reported: coefficients by name, how the scale was fixed, and
    whether the normalisation could use the optimum (False: a fallback, worth a warning)."""

    coefficients: dict[str, float]
    normalisation: str
    at_optimum: bool


@dataclass(frozen=True)
class Split:
    """One axis of the U-curve figure: each run's loss with the rest of the law removed, the
    fitted curve along the axis, and the y-axis label."""

    observed: np.ndarray
    curve: Callable[[np.ndarray], np.ndarray]
    label: str


class LawForm(ABC):
    """One form of L(x, r | N, D) = correction(x, r) applied to L_opt(N, D).

    Subclasses set `name`, `formula` (text for conditional.json), `coefficient_names` (the
    reported coefficients, in order), `n_free` (parameters the fit moves) and
    `distinct_needed` (the fewest distinct values of x and of r the fit needs).

    A form whose correction depends on the model size sets `depends_on_n = True`; its
    predict, model, jacobian, initial, optimum and split then take the non-embedding parameter
    count as a keyword `n` (arrays like x, or one value for `optimum`), and callers pass it.
    Forms that do not depend on N are never given `n`, so their methods need not accept it.
    """

    name: str
    formula: str
    coefficient_names: tuple[str, ...]
    n_free: int
    distinct_needed: Mapping[str, int] = {"x": 3, "r": 3}
    depends_on_n: bool = False

    def n_keyword(self, n: Any) -> dict[str, Any]:
        """{'n': n} for a form that depends on N (an error when n is missing), else {}: what
        callers splat into the methods so N-free forms keep their short signatures."""
        if not self.depends_on_n:
            return {}
        if n is None:
            raise ValueError(f"the {self.name} form's correction depends on N: give the "
                             "non-embedding parameter count (n=...)")
        return {"n": n}

    def coefficients(self, values: Mapping[str, Any]) -> dict[str, float]:
        """The reported coefficients, as floats in `coefficient_names` order, from a mapping
        (extra keys ignored); forms with a coefficient fixed by convention override this."""
        missing = [k for k in self.coefficient_names if k not in values]
        if missing:
            raise KeyError(f"the {self.name} form's coefficients are "
                           f"{list(self.coefficient_names)}; missing {missing}")
        return {k: float(values[k]) for k in self.coefficient_names}

    @abstractmethod
    def predict(self, c: Mapping[str, float], x: Any, r: Any, l_opt: Any) -> np.ndarray:
        """Loss from the reported coefficients `c` (numpy arrays, broadcast)."""

    @abstractmethod
    def model(self, p: np.ndarray, x: np.ndarray, r: np.ndarray,
              l_opt: np.ndarray) -> np.ndarray:
        """Loss from the free parameters `p`, as the fit sees it."""

    @abstractmethod
    def jacobian(self, p: np.ndarray, x: np.ndarray, r: np.ndarray,
                 l_opt: np.ndarray) -> np.ndarray:
        """d model / d p, one row per run, one column per free parameter."""

    @abstractmethod
    def initial(self, x: np.ndarray, r: np.ndarray, loss: np.ndarray,
                l_opt: np.ndarray) -> np.ndarray:
        """A starting point for Levenberg-Marquardt (n_free values)."""

    @abstractmethod
    def report(self, p: np.ndarray, r_fitted: np.ndarray) -> Reported:
        """The reported coefficients of free parameters `p`, fitted on runs with r `r_fitted`."""

    @abstractmethod
    def optimum(self, c: Mapping[str, float]) -> dict[str, Optimum]:
        """x* and r* (keys of AXES) of reported coefficients `c`."""

    @abstractmethod
    def split(self, c: Mapping[str, float], x: np.ndarray, r: np.ndarray, loss: np.ndarray,
              l_opt: np.ndarray) -> dict[str, Split]:
        """The U-curve figure's data for each axis of AXES."""
