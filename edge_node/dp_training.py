"""Local training with differential privacy: DP-SGD through Opacus, never by hand.

Opacus clips each sample's gradient to `max_grad_norm` and adds Gaussian noise of σ·`max_grad_norm`
to each step's sum. Batches are Poisson-sampled (each sample joins each step independently with
probability q = 1/ceil(n / batch_size)): that is the sampled Gaussian mechanism the RDP accountant
analyses; fixed shuffled batches would make the ε the node claims unproven.

The noise and the sampling are drawn from generators seeded from the operating system's entropy,
never from a fixed seed: a seed anyone can guess would let them subtract the noise. Opacus's
`secure_mode` (a cryptographic generator) needs torchcsprng, which has no build for current
torch, so the noise comes from torch's ordinary generator; README.md ("Privacy") says what that
leaves open.

`train_with_dp` wraps one training loop around any model and data (a task's `train` can call it);
`train_local_dp` applies it to the pinned task's model from a round's base weights, training only
the task's trainable tensors (a classifier's cross-entropy: every task reports accuracy).
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ledger.core.model import load_state
from ledger.core.policy import PrivacyPolicy
from ledger.core.task import Examples, Task
from ledger.core.task_spec import TaskSpec

# Plain SGD at a large step: clipped, noised gradients are small and momentum would carry the
# noise across steps. Tuned on digits at ε ≈ 1–8 (README.md, `bench updates`).
DP_LEARNING_RATE = 1.0


@dataclass(frozen=True)
class DpRun:
    """What Opacus did: the Poisson sample rate and the number of noisy steps (for the claim)."""

    sample_rate: float
    steps: int


def train_with_dp(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    momentum: float = 0.0,
    trainable: Collection[str] | None = None,
) -> DpRun:
    """Trains `model` in place for `epochs` Poisson-sampled passes of DP-SGD over (x, y).

    `trainable` names the parameters to train (default all); the others are frozen before Opacus
    wraps the model, so it computes per-sample gradients only for the trainable ones.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0 or len(y) == 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0 and data; got {epochs}, {batch_size}, {lr}, {len(y)}")
    from opacus import PrivacyEngine  # seconds to import: only nodes that train privately pay it

    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trainable is None or name in trainable)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=momentum)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, generator=_entropy_generator())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")  # see the module docstring
        engine = PrivacyEngine(accountant="rdp")  # 1.6 defaults to PRV; ε is RDP's here
        private_model, private_optimizer, private_loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            noise_generator=_entropy_generator(),
        )
    model.train()
    steps = 0
    with warnings.catch_warnings():
        # torch warns that the full backward hook fires w.r.t. module outputs when the inputs need
        # no gradient, as data never does: harmless.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(epochs):
            for batch_x, batch_y in private_loader:
                private_optimizer.zero_grad(set_to_none=True)
                loss_fn(private_model(batch_x), batch_y).backward()
                private_optimizer.step()
                steps += 1
    private_model.to_standard_module()  # removes Opacus's hooks; `model` holds the trained weights
    return DpRun(sample_rate=float(private_loader.sample_rate), steps=steps)


def train_local_dp(
    task: Task,
    spec: TaskSpec,
    base_tensors: Mapping[str, torch.Tensor],
    data: Examples,
    policy: PrivacyPolicy,
    *,
    lr: float = DP_LEARNING_RATE,
) -> dict[str, torch.Tensor]:
    """The task's trainable tensors after one round of DP-SGD on `data` under the pinned `policy`.

    Refuses to return weights whose training did not match the policy's sample rate and step
    count: the node would otherwise publish a claim that is not what happened.
    """
    model = task.build_model(seed=0)  # architecture only; the base weights overwrite the init
    load_state(model, base_tensors)
    run = train_with_dp(
        model,
        data.x,
        data.y,
        loss_fn=nn.CrossEntropyLoss(),
        epochs=policy.epochs,
        batch_size=policy.batch_size,
        lr=lr,
        noise_multiplier=policy.noise_multiplier,
        max_grad_norm=policy.max_grad_norm,
        trainable=spec.trainable_names,
    )
    expected = DpRun(policy.sample_rate(len(data)), policy.steps(len(data)))
    if run != expected:
        raise RuntimeError(f"Opacus trained with {run}, the policy expects {expected}: not claiming it")
    state = model.state_dict()
    return {name: state[name].detach().to(torch.float32).clone() for name in spec.trainable_names}


def _entropy_generator() -> torch.Generator:
    """A torch generator seeded from the operating system's entropy (64 bits)."""
    return torch.Generator().manual_seed(secrets.randbits(63))
