"""`fedledger bench aggregate`: what verifying updates costs on top of FedAvg (20 updates, 25M parameters).

The updates sit in a `LocalBlobStore` in a temporary folder, page cache warm, as they are for
an aggregator that just received them. Each repetition times, interleaved (order alternating):

- `unverified`: the bare merge: read each file, safetensors load, streaming float64 FedAvg;
- `unverified_pipelined`: the same, with a thread reading files ahead (the bare merge on 2 cores);
- `unverified_zero_copy`: the bare merge with the verified path's own I/O (each file read into a
  reused buffer, tensors viewed in place), one thread: what verification costs beyond its I/O;
- `verified`: the aggregator's own path (`aggregator.intake.admit_and_merge`, as
  `Aggregator.close_round` calls it): fetch the base, then fetch + re-hash + validate + merge.

All three must give the same bytes, and so must the reference `ledger.aggregation.fedavg`, run
once on all the updates held in memory. Peak RSS is the kernel's high-water mark (VmHWM), reset
before each variant.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ledger.cli.bench.common import add_output_arguments, emit, median

UPDATES = 20
PARAMETERS = 25_000_000
REPETITIONS = 3
RATIO_TARGET = 1.3
COLUMNS = 1000
CHANGE_STD = 1e-3  # per-parameter change of an honest update: L2 norm ~5 at 25M parameters
MB = 1_000_000


def model_shapes(parameters: int) -> dict[str, tuple[int, ...]]:
    """Three weight matrices (60/30/10 %) and a bias, `parameters` elements in all."""
    if parameters % COLUMNS or parameters < 4 * COLUMNS:
        raise ValueError(f"parameters must be a multiple of {COLUMNS} and at least {4 * COLUMNS}, got {parameters}")
    rows = parameters // COLUMNS - 1
    first, second = rows * 6 // 10, rows * 3 // 10
    return {
        "layer1.weight": (first, COLUMNS),
        "layer2.weight": (second, COLUMNS),
        "layer3.weight": (rows - first - second, COLUMNS),
        "output.bias": (COLUMNS,),
    }


def write_round(store: Any, parameters: int, updates: int, *, seed: int = 0) -> tuple[str, list[Any]]:
    """Stores a base model and `updates` honest updates of it; returns the base hash and submissions."""
    import torch

    from ledger.chain import events
    from ledger.core.serialization import serialize_tensors

    generator = torch.Generator().manual_seed(seed)
    base = {name: 0.05 * torch.randn(shape, generator=generator) for name, shape in model_shapes(parameters).items()}
    base_hash = store.put(serialize_tensors(base))
    submissions = []
    for index in range(updates):
        tensors = {name: t + CHANGE_STD * torch.randn(t.shape, generator=generator) for name, t in base.items()}
        update_hash = store.put(serialize_tensors(tensors))
        del tensors
        ref = events.LogRef(block_number=index + 1, block_hash="0x" + "00" * 32, tx_hash="0x" + "00" * 32, log_index=0)
        node = f"0x{index + 1:040x}"
        submissions.append(events.UpdateSubmitted(ref, 1, node, update_hash, 100 + 7 * index))
    return base_hash, submissions


# ---------------------------------------------------------------------------------- variants


def unverified(store: Any, submissions: Sequence[Any]) -> dict[str, Any]:
    """Read + safetensors load + streaming FedAvg, one update after the other; nothing is checked."""
    from safetensors.torch import load

    from aggregator.merge import StreamingFedAvg, merge_key
    from ledger.core.aggregation import Update

    merge = None
    for submission in sorted(submissions, key=lambda s: merge_key(s.update_hash, s.num_samples)):
        tensors = load(store.path_for(submission.update_hash).read_bytes())
        merge = merge or StreamingFedAvg(tensors)
        merge.add(Update(submission.update_hash, submission.num_samples, tensors))
        del tensors
    assert merge is not None
    return merge.result()


def unverified_pipelined(store: Any, submissions: Sequence[Any]) -> dict[str, Any]:
    """As `unverified`, with one thread reading the next files while this one loads and merges."""
    from concurrent.futures import ThreadPoolExecutor

    from safetensors.torch import load

    from aggregator.merge import StreamingFedAvg, merge_key
    from ledger.core.aggregation import Update

    ordered = sorted(submissions, key=lambda s: merge_key(s.update_hash, s.num_samples))
    merge = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        reads = deque(pool.submit(store.path_for(s.update_hash).read_bytes) for s in ordered[:2])
        for position, submission in enumerate(ordered):
            blob = reads.popleft().result()
            if position + 2 < len(ordered):
                reads.append(pool.submit(store.path_for(ordered[position + 2].update_hash).read_bytes))
            tensors = load(blob)
            del blob
            merge = merge or StreamingFedAvg(tensors)
            merge.add(Update(submission.update_hash, submission.num_samples, tensors))
            del tensors
    assert merge is not None
    return merge.result()


def unverified_zero_copy(store: Any, submissions: Sequence[Any]) -> dict[str, Any]:
    """Each file read into one reused buffer, viewed in place, merged; nothing is hashed or checked."""
    import numpy as np

    from aggregator.merge import StreamingFedAvg, merge_key
    from ledger.core.aggregation import Update
    from ledger.core.serialization import tensor_views

    buffer = np.empty(0, dtype=np.uint8)
    merge = None
    for submission in sorted(submissions, key=lambda s: merge_key(s.update_hash, s.num_samples)):
        with store.path_for(submission.update_hash).open("rb", buffering=0) as blob:
            size = os.fstat(blob.fileno()).st_size
            if buffer.size < size:
                buffer = np.empty(size, dtype=np.uint8)
            view = buffer.data[:size]
            blob.readinto(view)
        tensors = tensor_views(view, max_bytes=size)
        merge = merge or StreamingFedAvg(tensors)
        merge.add(Update(submission.update_hash, submission.num_samples, tensors))
        del tensors, view
    assert merge is not None
    return merge.result()


def verified(store: Any, submissions: Sequence[Any], base_hash: str, config: Any) -> dict[str, Any]:
    """The aggregator's path, as `Aggregator.close_round` runs it (without the chain calls)."""
    from aggregator.intake import admit_and_merge
    from ledger.core.serialization import deserialize_tensors

    base = deserialize_tensors(store.get(base_hash), max_bytes=config.max_update_bytes)
    intake = admit_and_merge(
        store,
        submissions,
        base,
        config.limits,
        rule=config.rule,
        rule_params=config.rule_params,
        workers=config.workers,
    )
    if intake.rejected:
        raise RuntimeError(f"the bench's honest updates were rejected: {intake.rejected[0][1:]}")
    return intake.weights()


# ---------------------------------------------------------------------------------- measuring


def peak_rss_supported() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS


def _timed(run: Callable[[], dict[str, Any]], track_rss: bool) -> tuple[float, str, float | None]:
    """(seconds, digest of the serialized result, peak RSS in MiB during the run)."""
    from ledger.core.hashing import sha256_hex
    from ledger.core.serialization import serialize_tensors

    gc.collect()
    if track_rss:
        _reset_peak()
    started = time.perf_counter()
    weights = run()
    seconds = time.perf_counter() - started
    peak = (_status_kib("VmHWM") or 0) / 1024 if track_rss else None
    digest = sha256_hex(serialize_tensors(weights))
    del weights
    return seconds, digest, peak


def _throughput(label_runs: dict[str, Callable[[], object]], size: int, repetitions: int) -> dict[str, float]:
    """MB/s of each callable on `size` bytes, interleaved, median of `repetitions`."""
    samples: dict[str, list[float]] = {label: [] for label in label_runs}
    for repetition in range(repetitions):
        labels = list(label_runs) if repetition % 2 == 0 else list(reversed(label_runs))
        for label in labels:
            started = time.perf_counter()
            label_runs[label]()
            samples[label].append(time.perf_counter() - started)
    return {label: round(size / median(times) / MB, 1) for label, times in samples.items()}


def measure_aggregate(
    *, updates: int = UPDATES, parameters: int = PARAMETERS, repetitions: int = REPETITIONS, workdir: Path | None = None
) -> dict[str, Any]:
    import numpy as np
    import torch

    from aggregator.coordinator import AggregatorConfig
    from ledger.core.aggregation import Update, fedavg
    from ledger.core.hashing import sha256_hex
    from ledger.core.serialization import deserialize_tensors
    from ledger.store.local import LocalBlobStore

    if updates < 1 or repetitions < 1:
        raise ValueError("updates and repetitions must be at least 1")
    track_rss = peak_rss_supported()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fedledger-bench-aggregate-", dir=workdir) as tmp:
        update_bytes = 4 * parameters + 1024  # the header is well under 1 KiB
        limit = max(update_bytes, 64 << 20)
        store = LocalBlobStore(Path(tmp), max_bytes=limit)
        base_hash, submissions = write_round(store, parameters, updates)
        config = AggregatorConfig(rule="fedavg", max_update_bytes=limit)  # the streaming merge is what is measured
        blob_size = store.path_for(submissions[0].update_hash).stat().st_size
        for submission in submissions:  # warm the page cache, as just after the uploads
            store.path_for(submission.update_hash).read_bytes()
        gc.collect()
        baseline_rss = (_status_kib("VmRSS") or 0) / 1024

        variants: dict[str, Callable[[], dict[str, Any]]] = {
            "unverified": lambda: unverified(store, submissions),
            "unverified_pipelined": lambda: unverified_pipelined(store, submissions),
            "unverified_zero_copy": lambda: unverified_zero_copy(store, submissions),
            "verified": lambda: verified(store, submissions, base_hash, config),
        }
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        peaks: dict[str, list[float]] = {name: [] for name in variants}
        digests: set[str] = set()
        for repetition in range(repetitions):
            order = list(variants) if repetition % 2 == 0 else list(reversed(variants))
            for name in order:
                elapsed, digest, peak = _timed(variants[name], track_rss)
                seconds[name].append(elapsed)
                digests.add(digest)
                if peak is not None:
                    peaks[name].append(peak)

        blob = store.path_for(submissions[0].update_hash).read_bytes()
        spare = np.empty(len(blob) + 1, dtype=np.uint8)  # as the verified path reads: into a reused buffer
        hashing = _throughput(
            {
                "project_sha256_hex": lambda: sha256_hex(blob),
                "hashlib_sha256": lambda: hashlib.sha256(blob).hexdigest(),
                "store_get_read_and_rehash": lambda: store.get(submissions[0].update_hash),
                "store_get_buffer_read_and_rehash": lambda: store.get_buffer(submissions[0].update_hash, spare),
            },
            len(blob),
            max(5, repetitions),
        )
        del blob, spare

        # The reference, once: every update in memory, `ledger.aggregation.fedavg` as auditors run it.
        def reference() -> dict[str, Any]:
            loaded = [
                Update(s.update_hash, s.num_samples, deserialize_tensors(store.get(s.update_hash), max_bytes=limit))
                for s in submissions
            ]
            return fedavg(loaded)

        reference_seconds, reference_digest, reference_peak = _timed(reference, track_rss)

    medians = {name: median(times) for name, times in seconds.items()}
    ratio = medians["verified"] / medians["unverified"]
    identical = digests == {reference_digest}
    return {
        "benchmark": "aggregate",
        "updates": updates,
        "parameters": parameters,
        "update_bytes": blob_size,
        "repetitions": repetitions,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "fetch_workers": config.workers,
        "seconds_median": {name: round(value, 3) for name, value in medians.items()},
        "seconds_samples": {name: [round(value, 3) for value in times] for name, times in seconds.items()},
        "ratio_verified_to_unverified": round(ratio, 3),
        "ratio_verified_to_unverified_pipelined": round(medians["verified"] / medians["unverified_pipelined"], 3),
        "ratio_verified_to_unverified_zero_copy": round(medians["verified"] / medians["unverified_zero_copy"], 3),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "verified_throughput_MBps": round(updates * blob_size / medians["verified"] / MB, 1),
        "hashing_MBps": hashing,
        "peak_rss_MiB": {name: round(max(values), 1) for name, values in peaks.items()} if track_rss else None,
        "baseline_rss_MiB": round(baseline_rss, 1),
        "reference_fedavg": {
            "seconds": round(reference_seconds, 3),
            "peak_rss_MiB": round(reference_peak, 1) if reference_peak is not None else None,
        },
        "identical_to_reference_fedavg": identical,
        "result_sha256": reference_digest,
        "notes": (
            "MB = 10^6 bytes. unverified = read + safetensors load + streaming float64 FedAvg on one thread "
            "(the target's baseline); unverified_pipelined adds a read-ahead thread; unverified_zero_copy "
            "uses the verified path's I/O (reused read buffer, tensors viewed in place) on one thread; "
            "verified = aggregator.intake.admit_and_merge: base fetch, then per update read + SHA-256 "
            "re-hash + header/layout parse + validation (names, shapes, dtype, finite, float64 norm) on "
            "worker threads, merged in hash order by the calling thread. Other jobs share the 2 cores: see "
            "load_average_1min. Peak RSS is VmHWM, reset before each variant."
        ),
        "target": {"ratio_verified_to_unverified_max": RATIO_TARGET},
        "meets_target": ratio <= RATIO_TARGET and identical,
    }


def add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "aggregate", help="verified vs unverified FedAvg of 20 updates of a 25M-parameter model"
    )
    parser.add_argument("--updates", type=int, default=UPDATES)
    parser.add_argument("--parameters", type=int, default=PARAMETERS, help=f"a multiple of {COLUMNS}")
    parser.add_argument("--repetitions", type=int, default=REPETITIONS)
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary store goes (default: $TMPDIR)")
    add_output_arguments(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = measure_aggregate(
        updates=args.updates, parameters=args.parameters, repetitions=args.repetitions, workdir=args.workdir
    )
    emit(report, as_json=args.json)
    return 0 if report["meets_target"] else 1
