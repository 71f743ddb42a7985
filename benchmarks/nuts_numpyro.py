"""Lock-step NUTS (``bnn.infer.nuts``, compiled) against NumPyro (and Pyro) on one posterior.

Two posteriors (``--posterior``), one thread, every sampler starting each chain from the same
weights (bnn's prior draws for ``rng=seed``) and scored by the same ESS (arviz rank-normalised
bulk ESS, the minimum over the scored quantities):

* ``toy``: the toy BNN of ``nuts_toy_bnn.py`` (1→50→1 tanh, σ = 0.1, 200 points, N(0, 1)
  weights), 4 chains × (100 warm-up + 100 draws), max tree depth 8; ESS of the predictive at
  20 grid points.
* ``blr``: Bayesian linear regression (200 points, 10 standard-normal features, σ = 1, N(0, 1)
  weights: an exact Gaussian posterior), 4 chains × (500 + 500), max tree depth 10; ESS of the
  10 weights. The ``bnn`` step also runs plain Pyro NUTS (chain after chain) here.

NumPyro (with CPU jax) is a benchmark-only install in its own environment, never a dependency
of bnn, so the script runs in three steps that share a folder:

    python benchmarks/nuts_numpyro.py bnn --posterior toy --seeds 0-7 --out OUT
    NUMPYRO_PYTHON benchmarks/nuts_numpyro.py numpyro --posterior toy --seeds 0-7 --out OUT
    python benchmarks/nuts_numpyro.py compare --seeds 0-7 --out OUT

Each sampler first does one untimed run (seed 99) so that compilation is excluded. ``bnn``
saves the data and the starting weights; ``numpyro`` reads them (it imports neither torch nor
bnn).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

CHAINS, WARM_UP_SEED = 4, 99
SETTINGS = {  # warm-up, draws, max tree depth, noise std
    "toy": (100, 100, 8, 0.1),
    "blr": (500, 500, 10, 1.0),
}
BLR_POINTS, BLR_FEATURES = 200, 10


def seeds(text: str) -> list[int]:
    """``"0-7"`` or ``"0,3,5"``."""
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def run_bnn(out: Path, chosen: list[int], posterior: str) -> None:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from nuts_toy_bnn import GRID, data, network

    import bnn
    from bnn.infer._log_joint import LogJoint
    from bnn.random.default import resolve_rng

    warmup, draws, max_depth, noise = SETTINGS[posterior]
    if posterior == "toy":
        x, y = data()
    else:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(BLR_POINTS, BLR_FEATURES, generator=generator)
        weights = torch.randn(BLR_FEATURES, 1, generator=generator)
        y = x @ weights + noise * torch.randn(BLR_POINTS, 1, generator=generator)
    np.save(out / "x.npy", x.numpy())
    np.save(out / "y.npy", y.numpy())
    for seed in [WARM_UP_SEED, *chosen]:
        with bnn.RNG(0).stream("init"):
            net = network() if posterior == "toy" else torch.nn.Linear(BLR_FEATURES, 1, bias=False)
        log_joint = LogJoint(net, bnn.Gaussian(noise))
        parent = resolve_rng(seed)
        starts = [log_joint.initial_weights("prior", parent.spawn(c)) for c in range(CHAINS)]
        start_weights = torch.stack([log_joint.flatten(s) for s in starts])
        np.save(out / f"start_{seed}.npy", start_weights.numpy())
        begin = time.perf_counter()
        samples, _ = bnn.infer.nuts(
            net,
            (x, y),
            likelihood=bnn.Gaussian(noise),
            num_chains=CHAINS,
            warmup=warmup,
            draws=draws,
            max_tree_depth=max_depth,
            jit_compile=True,
            rng=seed,
            progress=False,
        )
        seconds = time.perf_counter() - begin
        if posterior == "toy":
            functions = bnn.predict_with_uncertainty(samples, GRID, num_samples=CHAINS * draws)
            scored = functions.samples.reshape(CHAINS, draws, -1).numpy()
        else:
            scored = samples.samples["weight"].reshape(CHAINS, draws, -1).numpy()
        steps = samples.sample_stats["n_steps"].float().mean().item()
        save(out, "bnn", seed, scored, seconds, steps)
        if posterior == "blr":
            run_pyro_blr(out, seed, x, y, start_weights)


def run_pyro_blr(out: Path, seed: int, x: Any, y: Any, starts: Any) -> None:
    """Plain Pyro NUTS on the linear-regression posterior, chain after chain."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import MCMC, NUTS

    warmup, draws, max_depth, noise = SETTINGS["blr"]

    def model() -> None:
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([BLR_FEATURES]).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(x @ w, noise), obs=y.squeeze(-1))

    chains = []
    begin = time.perf_counter()
    for chain in range(CHAINS):
        pyro.set_rng_seed(seed * CHAINS + chain)
        kernel = NUTS(model, max_tree_depth=max_depth)
        mcmc = MCMC(
            kernel,
            num_samples=draws,
            warmup_steps=warmup,
            initial_params={"w": starts[chain]},
            disable_progbar=True,
        )
        mcmc.run()
        chains.append(mcmc.get_samples()["w"].numpy())
    seconds = time.perf_counter() - begin
    save(out, "pyro", seed, np.stack(chains), seconds, float("nan"))


def run_numpyro(out: Path, chosen: list[int], posterior: str) -> None:
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    warmup, draws, max_depth, noise = SETTINGS[posterior]
    x, y = jnp.asarray(np.load(out / "x.npy")), jnp.asarray(np.load(out / "y.npy"))
    grid = jnp.linspace(-1, 1, 20)[:, None]

    def network(w: jax.Array, inputs: jax.Array) -> jax.Array:
        if posterior == "blr":
            return inputs @ w[:, None]
        # bnn's flat order: 0.weight [50, 1], 0.bias [50], 2.weight [1, 50], 2.bias [1]
        hidden = jnp.tanh(inputs @ w[:50].reshape(50, 1).T + w[50:100])
        return hidden @ w[100:150].reshape(1, 50).T + w[150:151]

    def potential(w: jax.Array) -> jax.Array:
        residual = (y - network(w, x)) / noise
        log_likelihood = -0.5 * jnp.sum(residual**2) - y.size * (
            jnp.log(noise) + 0.5 * jnp.log(2 * jnp.pi)
        )
        log_prior = -0.5 * jnp.sum(w**2) - w.size * 0.5 * jnp.log(2 * jnp.pi)
        return -(log_likelihood + log_prior)

    for seed in [WARM_UP_SEED, *chosen]:
        start = jnp.asarray(np.load(out / f"start_{seed}.npy"))
        mcmc = MCMC(
            NUTS(potential_fn=potential, max_tree_depth=max_depth),
            num_warmup=warmup,
            num_samples=draws,
            num_chains=CHAINS,
            chain_method="vectorized",
            progress_bar=False,
        )
        begin = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(seed), init_params=start, extra_fields=("num_steps",))
        weights = np.asarray(mcmc.get_samples(group_by_chain=True))
        seconds = time.perf_counter() - begin
        predictions = (
            weights
            if posterior == "blr"
            else np.asarray(
                jax.vmap(jax.vmap(lambda w: network(w, grid)[:, 0]))(jnp.asarray(weights))
            )
        )
        steps = float(np.asarray(mcmc.get_extra_fields()["num_steps"]).mean())
        save(out, "numpyro", seed, predictions, seconds, steps)


def save(
    out: Path, sampler: str, seed: int, predictions: np.ndarray, seconds: float, steps: float
) -> None:
    np.save(out / f"{sampler}_{seed}.npy", predictions)
    record = {"seconds": seconds, "leapfrogs_per_draw": steps}
    (out / f"{sampler}_{seed}.json").write_text(json.dumps(record))
    print(f"{sampler} seed {seed}: {seconds:.1f} s, {steps:.0f} leapfrogs per draw", flush=True)


def compare(out: Path, chosen: list[int], posterior: str) -> None:  # noqa: ARG001 - one signature per step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

    summary = {}
    for sampler in ("bnn", "numpyro", "pyro"):
        if not (out / f"{sampler}_{chosen[0]}.json").exists():
            continue
        rows = []
        for seed in chosen:
            predictions = np.load(out / f"{sampler}_{seed}.npy")
            record = json.loads((out / f"{sampler}_{seed}.json").read_text())
            ess = az.ess(az.convert_to_dataset({"f": predictions}))["f"].values
            rows.append((float(ess.min()), float(ess.mean()), record["seconds"]))
        table = np.array(rows)
        summary[sampler] = {
            "min_ess_per_seed": table[:, 0].round(1).tolist(),
            "mean_min_ess": float(table[:, 0].mean()),
            "mean_grid_ess": float(table[:, 1].mean()),
            "seconds_per_run": float(table[:, 2].mean()),
            "min_ess_per_second": float((table[:, 0] / table[:, 2]).mean()),
        }
        print(sampler, json.dumps(summary[sampler]))
    ratio = summary["bnn"]["min_ess_per_second"] / summary["numpyro"]["min_ess_per_second"]
    time_ratio = summary["bnn"]["seconds_per_run"] / summary["numpyro"]["seconds_per_run"]
    print(
        f"ESS/s bnn / NumPyro: {ratio:.2f} (goal >= 1); "
        f"time per run bnn / NumPyro: {time_ratio:.2f}"
    )
    if "pyro" in summary:
        pyro_ratio = summary["bnn"]["min_ess_per_second"] / summary["pyro"]["min_ess_per_second"]
        print(f"ESS/s bnn / Pyro: {pyro_ratio:.2f}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["bnn", "numpyro", "compare"])
    parser.add_argument("--posterior", choices=sorted(SETTINGS), default="toy")
    parser.add_argument("--seeds", type=seeds, default=seeds("0-7"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    steps = {"bnn": run_bnn, "numpyro": run_numpyro, "compare": compare}
    steps[args.step](args.out, args.seeds, args.posterior)


if __name__ == "__main__":
    main()
