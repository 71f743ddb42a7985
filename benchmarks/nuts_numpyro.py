"""Lock-step NUTS (``bnn.infer.nuts``, compiled) against NumPyro on the same toy-BNN posterior.

The toy BNN of ``nuts_toy_bnn.py`` (1→50→1 tanh, σ = 0.1, 200 points, N(0, 1) weights), 4
chains × (100 warm-up + 100 draws), max tree depth 8, one thread. Both samplers start each
chain from the same weights (bnn's prior draws for ``rng=seed``) and are scored by the same
ESS (arviz rank-normalised bulk ESS of the predictive at 20 grid points; the minimum over the
grid). NumPyro (with CPU jax) is a benchmark-only install in its own environment, never a
dependency of bnn, so the script runs in three steps that share a folder:

    python benchmarks/nuts_numpyro.py bnn --seeds 0-7 --out OUT            # bnn's environment
    NUMPYRO_PYTHON benchmarks/nuts_numpyro.py numpyro --seeds 0-7 --out OUT
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

import numpy as np

WARMUP, DRAWS, CHAINS, MAX_DEPTH, NOISE = 100, 100, 4, 8, 0.1
WARM_UP_SEED = 99


def seeds(text: str) -> list[int]:
    """``"0-7"`` or ``"0,3,5"``."""
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def run_bnn(out: Path, chosen: list[int]) -> None:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from nuts_toy_bnn import GRID, data, network

    import bnn
    from bnn.infer._log_joint import LogJoint
    from bnn.random.default import resolve_rng

    x, y = data()
    np.save(out / "x.npy", x.numpy())
    np.save(out / "y.npy", y.numpy())
    for seed in [WARM_UP_SEED, *chosen]:
        with bnn.RNG(0).stream("init"):
            net = network()
        log_joint = LogJoint(net, bnn.Gaussian(NOISE))
        parent = resolve_rng(seed)
        starts = [log_joint.initial_weights("prior", parent.spawn(c)) for c in range(CHAINS)]
        np.save(out / f"start_{seed}.npy", torch.stack([log_joint.flatten(s) for s in starts]))
        begin = time.perf_counter()
        samples, _ = bnn.infer.nuts(
            net,
            (x, y),
            likelihood=bnn.Gaussian(NOISE),
            num_chains=CHAINS,
            warmup=WARMUP,
            draws=DRAWS,
            max_tree_depth=MAX_DEPTH,
            jit_compile=True,
            rng=seed,
            progress=False,
        )
        seconds = time.perf_counter() - begin
        functions = bnn.predict_with_uncertainty(samples, GRID, num_samples=CHAINS * DRAWS)
        predictions = functions.samples.reshape(CHAINS, DRAWS, -1).numpy()
        steps = samples.sample_stats["n_steps"].float().mean().item()
        save(out, "bnn", seed, predictions, seconds, steps)


def run_numpyro(out: Path, chosen: list[int]) -> None:
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    x, y = jnp.asarray(np.load(out / "x.npy")), jnp.asarray(np.load(out / "y.npy"))
    grid = jnp.linspace(-1, 1, 20)[:, None]

    def network(w: jax.Array, inputs: jax.Array) -> jax.Array:
        # bnn's flat order: 0.weight [50, 1], 0.bias [50], 2.weight [1, 50], 2.bias [1]
        hidden = jnp.tanh(inputs @ w[:50].reshape(50, 1).T + w[50:100])
        return hidden @ w[100:150].reshape(1, 50).T + w[150:151]

    def potential(w: jax.Array) -> jax.Array:
        residual = (y - network(w, x)) / NOISE
        log_likelihood = -0.5 * jnp.sum(residual**2) - y.size * (
            jnp.log(NOISE) + 0.5 * jnp.log(2 * jnp.pi)
        )
        log_prior = -0.5 * jnp.sum(w**2) - w.size * 0.5 * jnp.log(2 * jnp.pi)
        return -(log_likelihood + log_prior)

    for seed in [WARM_UP_SEED, *chosen]:
        start = jnp.asarray(np.load(out / f"start_{seed}.npy"))
        mcmc = MCMC(
            NUTS(potential_fn=potential, max_tree_depth=MAX_DEPTH),
            num_warmup=WARMUP,
            num_samples=DRAWS,
            num_chains=CHAINS,
            chain_method="vectorized",
            progress_bar=False,
        )
        begin = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(seed), init_params=start, extra_fields=("num_steps",))
        weights = np.asarray(mcmc.get_samples(group_by_chain=True))
        seconds = time.perf_counter() - begin
        predictions = np.asarray(
            jax.vmap(jax.vmap(lambda w: network(w, grid)[:, 0]))(jnp.asarray(weights))
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


def compare(out: Path, chosen: list[int]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

    summary = {}
    for sampler in ("bnn", "numpyro"):
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
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["bnn", "numpyro", "compare"])
    parser.add_argument("--seeds", type=seeds, default=seeds("0-7"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"bnn": run_bnn, "numpyro": run_numpyro, "compare": compare}[args.step](args.out, args.seeds)


if __name__ == "__main__":
    main()
