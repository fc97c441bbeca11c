"""The options that set what genesis pins about updates: their encoding and node-side privacy.

`aggregator run` and `demo` share them (the demo forwards them to its aggregator process). Light
on purpose: only the standard library and `ledger.core.policy` (itself standard library only).
"""

from __future__ import annotations

import argparse

from ledger.core.policy import DEFAULT_ENCODING, ENCODINGS, PolicyError, PrivacyPolicy, epsilon_text

_DEFAULTS = PrivacyPolicy(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, epsilon_budget="1.000000")


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "updates and privacy (pinned at genesis; nodes read them from the chain and follow them)"
    )
    group.add_argument("--encoding", choices=ENCODINGS, default=DEFAULT_ENCODING,
                       help="update encoding: f32 weights, f16 change, or int8 change with a scale per tensor")
    group.add_argument("--dp-noise-multiplier", type=float, metavar="SIGMA",
                       help="train every node with DP-SGD (Opacus) at this noise multiplier; enables DP")
    group.add_argument("--dp-max-grad-norm", type=float, default=_DEFAULTS.max_grad_norm, metavar="C",
                       help="per-sample gradient clipping norm")
    group.add_argument("--dp-delta", type=float, default=_DEFAULTS.delta, metavar="DELTA", help="the δ of (ε, δ)-DP")
    group.add_argument("--dp-epsilon-budget", metavar="EPSILON",
                       help="the cumulative ε each node may spend over all rounds (required with DP)")
    group.add_argument("--dp-batch-size", type=int, default=_DEFAULTS.batch_size,
                       help="expected Poisson batch size: the sample rate is 1/ceil(n/batch size)")
    group.add_argument("--dp-epochs", type=int, default=_DEFAULTS.epochs, help="local DP-SGD epochs per round")


def privacy_policy(args: argparse.Namespace) -> PrivacyPolicy | None:
    """The DP policy the options describe (None without --dp-noise-multiplier); `UsageError` if incomplete."""
    from ledger.cli.errors import UsageError

    if args.dp_noise_multiplier is None:
        if args.dp_epsilon_budget is not None:
            raise UsageError("--dp-epsilon-budget needs --dp-noise-multiplier (DP is off without it)")
        return None
    if args.dp_epsilon_budget is None:
        raise UsageError("--dp-noise-multiplier needs --dp-epsilon-budget: the ε each node may spend in total")
    try:
        return PrivacyPolicy(
            noise_multiplier=args.dp_noise_multiplier,
            max_grad_norm=args.dp_max_grad_norm,
            delta=args.dp_delta,
            epsilon_budget=epsilon_text(args.dp_epsilon_budget),
            batch_size=args.dp_batch_size,
            epochs=args.dp_epochs,
        )
    except PolicyError as exc:
        raise UsageError(f"the --dp-* options do not make a privacy policy: {exc}") from None


def policy_argv(args: argparse.Namespace) -> list[str]:
    """The same options as a command line, for a child process (the demo's aggregator)."""
    argv = ["--encoding", args.encoding]
    if args.dp_noise_multiplier is not None:
        argv += ["--dp-noise-multiplier", repr(args.dp_noise_multiplier), "--dp-max-grad-norm", repr(args.dp_max_grad_norm)]
        argv += ["--dp-delta", repr(args.dp_delta), "--dp-batch-size", str(args.dp_batch_size)]
        argv += ["--dp-epochs", str(args.dp_epochs)]
    if args.dp_epsilon_budget is not None:
        argv += ["--dp-epsilon-budget", args.dp_epsilon_budget]
    return argv
