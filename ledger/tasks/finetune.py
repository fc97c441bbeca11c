"""`digits-finetune`: fine-tuning on device. A pre-trained backbone is frozen; nodes train only the head.

The backbone (64 → 128 → 64, ReLU) is pre-trained once, reproducibly, on a public share of the
digits that no node holds (30% of the training pool, chosen by hash order, stratified by label);
its weights' SHA-256 is pinned at genesis as the task's `backbone` asset. Only the head (64 → 10)
is trainable, so an update carries 650 of the model's 17,226 parameters and frozen tensors come
from the base, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import torch
from torch import nn

from ledger.core.hashing import sha256_hex
from ledger.core.model import state_tensors
from ledger.core.serialization import serialize_tensors
from ledger.core.task import DataSplit
from ledger.tasks.digits import NUM_CLASSES, NUM_FEATURES, DigitsTask, bundled_digits
from ledger.tasks.partition import split_pool
from ledger.tasks.training import train_classifier

PUBLIC_FRACTION = 0.3
PUBLIC_SEED = 1  # which samples are public: another hash order than the test split's
PRETRAIN_SEED = 0
PRETRAIN_EPOCHS = 30
BACKBONE = "backbone."


class FinetuneNet(nn.Module):
    """A feature extractor (`backbone`) and a linear classifier on its 64 features (`head`)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(NUM_FEATURES, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


@lru_cache(maxsize=1)
def public_and_private() -> tuple[DataSplit, DataSplit]:
    """(public, private): the pre-training share with the held-out test set, and what nodes share out."""
    digits = bundled_digits()
    private, public = split_pool(digits.train, test_fraction=PUBLIC_FRACTION, seed=PUBLIC_SEED)
    return DataSplit(train=public, test=digits.test), DataSplit(train=private, test=digits.test)


@lru_cache(maxsize=1)
def pretrained_backbone() -> Mapping[str, torch.Tensor]:
    """The backbone's weights after pre-training on the public share: the same bytes on every run.

    Runs on one thread in a forked RNG, so neither the caller's thread count nor its RNG state
    changes (or is changed by) the result. Cached: callers must not modify the tensors.
    """
    public, _ = public_and_private()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PRETRAIN_SEED)
            net = FinetuneNet()
            train_classifier(net, public.train, epochs=PRETRAIN_EPOCHS, batch_size=32, lr=0.05, seed=PRETRAIN_SEED)
    finally:
        torch.set_num_threads(threads)
    return {name: tensor for name, tensor in state_tensors(net).items() if name.startswith(BACKBONE)}


class DigitsFinetune(DigitsTask):
    """The pre-trained backbone, frozen, under a head initialised from the genesis seed."""

    name = "digits-finetune"

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = FinetuneNet()
        backbone = pretrained_backbone()
        with torch.no_grad():
            for name, tensor in backbone.items():
                net.get_parameter(name).copy_(tensor)
        return net

    def trainable(self, tensor_name: str) -> bool:
        return not tensor_name.startswith(BACKBONE)

    def bundled_data(self) -> DataSplit:
        return public_and_private()[1]

    def assets(self) -> Mapping[str, str]:
        return {"backbone": sha256_hex(serialize_tensors(pretrained_backbone()))}


DIGITS_FINETUNE = DigitsFinetune()
