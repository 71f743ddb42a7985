"""A small but complete training run, used by the reproducibility tests in separate processes.

Random init, a shuffled DataLoader with worker processes and random augmentation (torch and
NumPy), dropout, SGD. Prints a SHA-256 of the final parameters. Can stop after ``--stop-at``
epochs and save a checkpoint (model + optimizer + RNG state), or resume from one.

    python tests/random/repro_train.py --seed 0 [--workers 2] [--stop-at K --save F | --resume F]
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import bnn


class NoisyRegression(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Fixed inputs; every fetch adds fresh torch and NumPy noise (a random augmentation)."""

    def __init__(self) -> None:
        grid = torch.linspace(-2, 2, 64).unsqueeze(-1)
        self.x, self.y = grid, torch.sin(2 * grid)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        jitter = 0.05 * torch.randn(1) + float(np.random.normal(scale=0.05))
        return self.x[i] + jitter, self.y[i]


def build(rng: bnn.RNG, workers: int) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
    with rng.stream("init"):
        model = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Dropout(0.2), nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(
        NoisyRegression(),
        batch_size=8,
        shuffle=True,
        num_workers=workers,
        persistent_workers=False,
        **rng.dataloader_kwargs("data"),
    )
    return model, optimizer, loader


def train_epoch(rng: bnn.RNG, model: nn.Module, optimizer: torch.optim.Optimizer, loader) -> None:
    model.train()
    for x, y in loader:
        with rng.stream("dropout"):
            loss = ((model(x) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def digest(model: nn.Module) -> str:
    hasher = hashlib.sha256()
    for tensor in model.state_dict().values():
        hasher.update(tensor.numpy().tobytes())
    return hasher.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stop-at", type=int, default=None)
    parser.add_argument("--save", default=None)
    parser.add_argument("--resume", default=None)
    args = parser.parse_args()

    rng = bnn.seed_everything(args.seed)
    model, optimizer, loader = build(rng, args.workers)
    start = 0
    if args.resume:
        checkpoint = torch.load(args.resume, weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        rng.load_state_dict(checkpoint["rng"])
        start = checkpoint["epoch"]
    for epoch in range(start, args.epochs):
        if args.stop_at is not None and epoch == args.stop_at:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": rng.state_dict(),
                    "epoch": epoch,
                },
                args.save,
            )
            print("saved")
            return
        train_epoch(rng, model, optimizer, loader)
    print(digest(model))


if __name__ == "__main__":
    main()
