r"""Sampler settings of an LLC estimate: defaults, how they are resolved and checked.

The defaults are the settings under which the estimator passes its known-answer tests
(``tests/test_llc_known_answers.py``, table in ``docs/llc.md``):

* ``n_beta`` (inverse temperature times sample size): ``n / ln n`` with ``n`` the number of
  training samples the loss is averaged over (``num_samples``; without it, the number of
  samples in the given minibatches). ``"B/ln(B)"`` selects the older rule, ``B`` the minibatch
  size, which is much smaller and lets the localisation set the estimate.
* ``localization`` (gamma): :data:`DEFAULT_LOCALIZATION` = 1. A direction of curvature ``h``
  is localisation-dominated when ``n_beta h < gamma``; a quartic one when
  ``gamma > sqrt(n_beta c)`` (``docs/llc.md``).
* ``step_size`` (epsilon): :data:`DEFAULT_STEP_SCALE` / ``(n_beta + gamma)``, i.e. about
  0.05 / ``n_beta``. The Langevin dynamics of ``n_beta L + gamma/2 |w - w*|^2`` depend on
  ``epsilon`` only through ``epsilon a`` with ``a = n_beta h + gamma`` for a direction of
  curvature ``h``, so the default keeps the discretisation error of a direction of unit
  curvature (a factor ``1 / (1 - epsilon a / 4)`` on its contribution) and its relaxation
  time (``1 / (epsilon a)`` steps) independent of the data size and of the localisation: a
  1.3 % bias at ``h = 1``, 20 steps to relax. A stiffer loss needs a smaller one; singular
  (quartic) directions relax more slowly, in about ``sqrt(n_beta) / 0.05`` steps. The MALA
  acceptance and the trace of the result say which (:mod:`lit_emergence.llc.diagnostics`).

:func:`calibration_grid` builds one vectorised call that tries several step sizes and
localisations on the same restriction (a calibration sweep).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lit_emergence.llc.sampler import SAMPLERS

__all__ = [
    "DEFAULT_LOCALIZATION",
    "DEFAULT_STEP_SCALE",
    "N_BETA_RULES",
    "calibration_grid",
    "check_sampling_settings",
    "default_n_beta",
    "default_step_size",
    "n_beta_from_samples",
    "per_restriction",
    "resolve_n_beta",
]

DEFAULT_LOCALIZATION = 1.0
"""Default localisation gamma."""

DEFAULT_STEP_SCALE = 0.05
"""Default ``step_size * (n_beta + localization)``."""

N_BETA_RULES = ("n/ln(n)", "B/ln(B)")
"""Names accepted by ``n_beta=``: the training-set rule (default) and the minibatch rule."""


def n_beta_from_samples(num_samples: int) -> float:
    """``n / ln n``: inverse temperature ``1 / ln n`` times the ``n`` samples of the loss.

    Args:
        num_samples: Number of training samples the loss is averaged over (at least 2).

    Returns:
        ``n / ln(n)``, e.g. 1085.7 for n = 10 000.

    Raises:
        ValueError: For fewer than 2 samples.

    """
    if int(num_samples) != num_samples or num_samples < 2:
        raise ValueError(
            f"num_samples={num_samples} gives no n/ln n; pass the training set size (>= 2) "
            "or n_beta explicitly"
        )
    return num_samples / math.log(num_samples)


def default_n_beta(batch_size: int) -> float:
    """``B / ln B``, the older rule from the minibatch size (``n_beta="B/ln(B)"``).

    Args:
        batch_size: Minibatch size B (at least 2).

    Returns:
        ``B / ln(B)``, e.g. 46.17 for B = 256.

    """
    if batch_size < 2:
        raise ValueError(f"batch size {batch_size} < 2 gives no B/ln B; pass n_beta explicitly")
    return batch_size / math.log(batch_size)


def resolve_n_beta(
    n_beta: float | str | None,
    num_samples: int | None,
    batch_size: int,
    samples_in_batches: int,
) -> tuple[float, str, int | None]:
    """The value of ``n_beta``, the rule that gave it and the ``n`` it used.

    Args:
        n_beta: A positive number, one of :data:`N_BETA_RULES`, or None for ``"n/ln(n)"``.
        num_samples: Training set size ``n``; None counts the samples in the minibatches.
        batch_size: Leading size of the first minibatch (for ``"B/ln(B)"``).
        samples_in_batches: Samples in all the minibatches (``n`` when ``num_samples`` is None).

    Returns:
        ``(n_beta, rule, n)``: rule ``"given"``, ``"n/ln(n)"`` or ``"B/ln(B)"``; ``n`` is None
        unless the rule is ``"n/ln(n)"``.

    Raises:
        ValueError: For an unknown rule or a value that is not finite and positive.

    """
    if n_beta is None:
        n_beta = "n/ln(n)"
    if isinstance(n_beta, str):
        if n_beta == "B/ln(B)":
            return default_n_beta(batch_size), n_beta, None
        if n_beta == "n/ln(n)":
            n = samples_in_batches if num_samples is None else num_samples
            return n_beta_from_samples(n), n_beta, int(n)
        raise ValueError(f"n_beta={n_beta!r} is unknown; use a number or one of {N_BETA_RULES}")
    if isinstance(n_beta, bool) or not (math.isfinite(n_beta) and n_beta > 0):
        raise ValueError(f"n_beta={n_beta} must be finite and > 0; e.g. leave it None for n/ln n")
    return float(n_beta), "given", None


def default_step_size(n_beta: float, localization: float) -> float:
    """:data:`DEFAULT_STEP_SCALE` / ``(n_beta + localization)``: the step used when none is given.

    Args:
        n_beta: Inverse temperature times sample size.
        localization: Localisation strength gamma of the restriction.

    Returns:
        The step size epsilon.

    """
    return DEFAULT_STEP_SCALE / (n_beta + localization)


def per_restriction(
    setting: str, value: float | Mapping[str, float], names: Sequence[str], allow_zero: bool
) -> list[float]:
    """One float per restriction from a float or a dict name -> float.

    Raises:
        ValueError: For a missing name or a value that is not finite and positive (or >= 0).
    """
    if isinstance(value, Mapping):
        missing = [n for n in names if n not in value]
        if missing:
            raise ValueError(f"{setting} has no value for restriction(s) {missing}; add them")
        values = [float(value[n]) for n in names]
    else:
        values = [float(value)] * len(names)
    for v in values:
        if not (v >= 0 if allow_zero else v > 0) or not math.isfinite(v):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{setting}={v} must be finite and {bound}")
    return values


def check_settings(**settings: Any) -> None:
    """Check the scalar settings of :func:`~lit_emergence.llc.estimate_llc_many` (one line each).

    Raises:
        ValueError: Naming the setting, its value and the rule.
    """
    if settings["sampler"] not in SAMPLERS:
        raise ValueError(f"sampler={settings['sampler']!r} is unknown; use one of {SAMPLERS}")
    for name in ("num_chains", "num_draws", "thinning", "acceptance_every"):
        value = settings.get(name, 1)
        if int(value) != value or value < 1:
            raise ValueError(f"{name}={value} must be a positive integer")
    if int(settings["num_burnin"]) != settings["num_burnin"] or settings["num_burnin"] < 0:
        raise ValueError(f"num_burnin={settings['num_burnin']} must be an integer >= 0")
    if not settings.get("divergence_factor", 1.0) > 0:
        raise ValueError(f"divergence_factor={settings['divergence_factor']} must be > 0")
    if not 0.0 <= settings.get("rmsprop_alpha", 0.0) < 1.0:
        raise ValueError(f"rmsprop_alpha={settings['rmsprop_alpha']} must be in [0, 1)")
    if not settings.get("rmsprop_eps", 1.0) > 0:
        raise ValueError(f"rmsprop_eps={settings['rmsprop_eps']} must be > 0, e.g. 0.1")
    check = settings.get("localization_check")
    if check is not None and not (math.isfinite(check) and check > 1):
        raise ValueError(
            f"localization_check={check} must be a factor > 1 (the check runs at "
            "localization / factor), or None to skip it"
        )


def check_sampling_settings(
    *,
    num_chains: int,
    num_draws: int,
    num_burnin: int,
    step_size: float | Mapping[str, float] | None,
    localization: float | Mapping[str, float],
    sampler: str,
    n_beta: float | str | None = None,
    num_samples: int | None = None,
    localization_check: float | None = None,
) -> None:
    """Check sampling settings before any work, with the messages of the estimator.

    Raises:
        ValueError: One line naming the setting, its value and the rule.
    """
    check_settings(
        sampler=sampler,
        num_chains=num_chains,
        num_draws=num_draws,
        num_burnin=num_burnin,
        localization_check=localization_check,
    )
    for setting, value, allow_zero in (
        ("step_size", step_size, False),
        ("localization", localization, True),
    ):
        if value is None and setting == "step_size":
            continue
        names = list(value) if isinstance(value, Mapping) else [setting]
        per_restriction(setting, value, names, allow_zero)
    if n_beta is not None:
        resolve_n_beta(n_beta, num_samples, batch_size=2, samples_in_batches=2)
    if num_samples is not None:
        n_beta_from_samples(num_samples)


def calibration_grid(
    restriction: Any,
    step_sizes: Sequence[float],
    localizations: Sequence[float],
    name: str = "",
) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """Restrictions, step sizes and localisations that try every pair of settings in one call.

    Every entry samples the same coordinates, so all of them share one vmap (and, with the
    same seed, the same noise: differences between settings are not Monte Carlo noise)::

        restrictions, eps, gamma = calibration_grid(None, [1e-5, 3e-5], [1.0, 10.0])
        results = estimate_llc_many(model, loss_fn, batches, restrictions, step_size=eps,
                                    localization=gamma, localization_check=None)
        # results["eps=1e-05,gamma=1"].verdict, .acceptance, .loss_trace, ...

    Args:
        restriction: The restriction to sample (None = the whole model).
        step_sizes: Step sizes to try.
        localizations: Localisations to try.
        name: Prefix of the entry names (e.g. a component name).

    Returns:
        ``(restrictions, step_size, localization)`` for
        :func:`~lit_emergence.llc.estimate_llc_many`, keyed ``"<name>eps=<e>,gamma=<g>"``.

    """
    restrictions: dict[str, Any] = {}
    step_size: dict[str, float] = {}
    localization: dict[str, float] = {}
    for eps in step_sizes:
        for gamma in localizations:
            key = f"{name}eps={eps:g},gamma={gamma:g}"
            restrictions[key] = restriction
            step_size[key] = float(eps)
            localization[key] = float(gamma)
    return restrictions, step_size, localization
