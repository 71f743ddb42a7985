"""Convergence summaries of posterior draws: R-hat, ESS, MCSE, divergences, stuck samplers.

``summary`` reads any ArviZ export of ``bnn.to_arviz`` (or converts a posterior first) and
reports, per parameter tensor, the worst R-hat, the smallest bulk/tail ESS and the largest
MCSE over its elements. It flags what makes draws untrustworthy and warns
(``ConvergenceWarning``): R-hat > 1.01 or NaN, ESS < 400, divergent transitions, and samplers
that never moved (a chain whose draws are all identical, or an acceptance rate of 0 — e.g.
HMC with too large a step and no warm-up, whose R-hat is NaN and whose "ESS" equals the number
of draws). ``Summary.converged`` is ``False`` whenever anything was flagged.

Example:
    >>> report = bnn.summary(samples)          # samples: a SampleSet from bnn.infer.nuts
    >>> report.converged, report.problems
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnn.evaluate.diagnostics import arviz_module, is_arviz, to_arviz

__all__ = ["ESS_THRESHOLD", "RHAT_THRESHOLD", "ConvergenceWarning", "Summary", "summary"]

RHAT_THRESHOLD = 1.01
ESS_THRESHOLD = 400


class ConvergenceWarning(UserWarning):
    """Draws that cannot be trusted: R-hat, ESS, divergences or a sampler that did not move."""


@dataclass(frozen=True)
class Summary:
    """Convergence summary, one row per parameter tensor (aggregated over its elements).

    Attributes:
        rows: per parameter: ``size``, ``mean`` and ``sd`` (averaged over elements), worst
            ``r_hat``, smallest ``ess_bulk`` and ``ess_tail``, largest ``mcse_mean``.
        problems: findings that make the draws untrustworthy (R-hat > 1.01 or NaN, ESS < 400,
            divergences, chains that never moved, zero acceptance).
        is_mcmc: whether R-hat is meaningful.
        notes: information that is not a problem (independent draws: R-hat does not apply).
    """

    rows: dict[str, dict[str, float]]
    problems: tuple[str, ...]
    is_mcmc: bool
    notes: tuple[str, ...] = ()

    @property
    def converged(self) -> bool:
        """``True`` only when nothing was flagged."""
        return not self.problems

    def to_markdown(self) -> str:
        header = (
            "| parameter | size | mean | sd | max r_hat | min ess_bulk | min ess_tail | max mcse |"
        )
        lines = [header, "|---|---|---|---|---|---|---|---|"]
        for name, row in self.rows.items():
            lines.append(
                f"| {name} | {int(row['size'])} | {row['mean']:.4g} | {row['sd']:.4g} | "
                f"{row['r_hat']:.3f} | {row['ess_bulk']:.0f} | {row['ess_tail']:.0f} | "
                f"{row['mcse_mean']:.3g} |"
            )
        lines += [f"- {problem}" for problem in self.problems]
        lines += [f"- note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def summary(posterior: object, *, warn: bool = True, **kwargs: Any) -> Summary:
    """R-hat (rank-normalised, split), bulk/tail ESS and MCSE for every parameter tensor.

    Args:
        posterior: an ArviZ export of ``bnn.to_arviz``, or anything ``to_arviz`` accepts
            (extra keyword arguments go to it), e.g. a `SampleSet`.
        warn: emit a ``ConvergenceWarning`` listing the problems, if any.

    Returns:
        A `Summary`; ``summary.converged`` is ``False`` when anything was flagged.
    """
    data: Any = posterior if is_arviz(posterior) else to_arviz(posterior, **kwargs)
    post = data["posterior"]
    post = post.to_dataset() if hasattr(post, "to_dataset") else post
    is_mcmc = bool(int(post.attrs.get("bnn_is_mcmc", 1)))
    statistics = _statistics(post, is_mcmc)
    rows: dict[str, dict[str, float]] = {}
    problems: list[str] = []
    for name in post.data_vars:
        values = np.asarray(post[name].values, dtype=float)
        rows[str(name)] = _row(values, str(name), statistics)
        problems += _parameter_problems(str(name), values, rows[str(name)], is_mcmc)
    problems += _sampler_problems(data)
    notes = () if is_mcmc else (_INDEPENDENT,)
    result = Summary(rows=rows, problems=tuple(problems), is_mcmc=is_mcmc, notes=notes)
    if warn and problems:
        warnings.warn("; ".join(problems), ConvergenceWarning, stacklevel=2)
    return result


_INDEPENDENT = (
    "draws are independent samples (VI/MC dropout/ensemble), not Markov chains: R-hat does "
    "not apply"
)


def _statistics(post: Any, is_mcmc: bool) -> dict[str, Any]:
    """ArviZ's R-hat (multi-chain MCMC only), bulk/tail ESS and MCSE of every variable."""
    az = arviz_module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant draws: 0/0 inside ArviZ
        return {
            "r_hat": az.rhat(post) if int(post.sizes["chain"]) > 1 and is_mcmc else None,
            "ess_bulk": az.ess(post, method="bulk"),
            "ess_tail": az.ess(post, method="tail"),
            "mcse_mean": az.mcse(post, method="mean"),
        }


def _row(values: np.ndarray, name: str, statistics: dict[str, Any]) -> dict[str, float]:
    """One parameter's row: its size, mean, sd and the worst diagnostic over its elements."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN statistics of constant draws
        return {
            "size": float(np.prod(values.shape[2:])) if values.ndim > 2 else 1.0,
            "mean": float(values.mean()),
            "sd": float(values.std(axis=(0, 1)).mean()),
            "r_hat": _worst(statistics["r_hat"], name, np.nanmax),
            "ess_bulk": _worst(statistics["ess_bulk"], name, np.nanmin),
            "ess_tail": _worst(statistics["ess_tail"], name, np.nanmin),
            "mcse_mean": _worst(statistics["mcse_mean"], name, np.nanmax),
        }


def _worst(dataset: Any, name: str, reduce: Any) -> float:
    if dataset is None:
        return math.nan
    if hasattr(dataset, "to_dataset"):
        dataset = dataset.to_dataset()
    return float(reduce(np.atleast_1d(np.asarray(dataset[name].values, dtype=float))))


def _parameter_problems(
    name: str, values: np.ndarray, row: dict[str, float], is_mcmc: bool
) -> list[str]:
    """What makes one parameter's draws untrustworthy."""
    problems = []
    flat = values.reshape(values.shape[0], values.shape[1], -1)  # [chain, draw, element]
    stuck = [c for c in range(flat.shape[0]) if bool(np.all(flat[c] == flat[c, :1]))]
    if stuck and flat.shape[1] > 1:
        problems.append(
            f"{name}: chain(s) {stuck} never moved (every draw identical): the sampler rejected "
            "every proposal; lower the step size or run warm-up"
        )
    multi_chain_mcmc = is_mcmc and flat.shape[0] > 1
    if multi_chain_mcmc and math.isnan(row["r_hat"]):
        problems.append(f"{name}: R-hat is NaN (constant or non-finite draws)")
    elif row["r_hat"] > RHAT_THRESHOLD:
        problems.append(
            f"{name}: R-hat {row['r_hat']:.3f} > {RHAT_THRESHOLD} (chains disagree; run longer "
            "or reparameterise)"
        )
    ess = min(row["ess_bulk"], row["ess_tail"])
    if not stuck and (math.isnan(ess) or ess < ESS_THRESHOLD):
        problems.append(f"{name}: ESS {ess:.0f} < {ESS_THRESHOLD} (too few effective draws)")
    return problems


def _sampler_problems(data: Any) -> list[str]:
    """Divergences and zero acceptance, from the ``sample_stats`` group."""
    names = _group_names(data)
    if "sample_stats" not in names:
        return []
    stats = data["sample_stats"]
    problems = []
    if "diverging" in stats:
        divergences = int(np.asarray(stats["diverging"].values).sum())
        if divergences:
            problems.append(
                f"{divergences} divergent transitions (hard posterior geometry; raise "
                "target_accept)"
            )
    if "acceptance_rate" in stats:
        acceptance = np.asarray(stats["acceptance_rate"].values, dtype=float)
        rejecting = [c for c in range(acceptance.shape[0]) if not np.any(acceptance[c] > 0)]
        if rejecting:
            problems.append(
                f"chain(s) {rejecting} accepted no proposal (acceptance 0): lower the step "
                "size or run warm-up"
            )
    return problems


def _group_names(data: Any) -> list[str]:
    if hasattr(data, "groups") and callable(data.groups):
        return [str(g).strip("/") for g in data.groups()]
    return [str(g).strip("/") for g in getattr(data, "children", {})]
