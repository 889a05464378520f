"""Training steps per second of MiniLM in each precision, side by side, on this machine's CPU (or ``--device cuda``).

``training.precision: auto`` picks bf16 only where the hardware runs it natively (objectives/device.py). This
measures what that choice is worth where it runs: the same optimisation steps (real TweetEval tweets, batches of
16 grouped by length, AdamW), alternating fp32 and bf16 autocast rounds so that a busy machine slows both alike,
and prints examples/s per precision and bf16's ratio to fp32, with whether the CPU has AMX or AVX-512 BF16::

    python benchmarks/precision_speed.py                 # about 2 minutes on 2 cores with native bf16
    python benchmarks/precision_speed.py --steps 5       # a CPU without it emulates bf16: far slower
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import transformers
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from hps.objectives.data import load_splits, tokenize
from hps.objectives.device import Placement, cpu_has_native_bf16
from hps.objectives.model import load_classifier, load_tokenizer

CONF = Path(__file__).resolve().parents[1] / "conf"


def batches(steps: int) -> tuple[list[dict[str, torch.Tensor]], DictConfig]:
    """``steps`` padded batches of 16 tweets of similar length, labels included, and the task config."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("finetune")
    tokenizer = load_tokenizer(cfg.model)
    table = tokenize(load_splits(cfg.data).train, tokenizer, list(cfg.data.text_columns), cfg.training.max_length)
    order = sorted(range(len(table)), key=lambda i: len(table[i]["input_ids"]))
    collate = transformers.DataCollatorWithPadding(tokenizer)
    groups = [order[start : start + 16] for start in range(0, len(order) - 15, 16)]
    stride = max(1, len(groups) // steps)  # short, middle and long batches alike
    return [collate(table.select(group).to_list()) for group in groups[::stride][:steps]], cfg


def examples_per_second(model: torch.nn.Module, place: Placement, data: list[dict[str, torch.Tensor]]) -> float:
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-5, fused=place.device.type in ("cpu", "cuda")
    )  # as training does
    model.train()
    started, examples = time.perf_counter(), 0
    for batch in data:
        batch = {key: tensor.to(place.device) for key, tensor in batch.items()}
        labels = batch.pop("labels")
        with place.autocast():
            loss = torch.nn.functional.cross_entropy(model(**batch).logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        examples += len(labels)
    if place.device.type == "cuda":
        torch.cuda.synchronize()
    return examples / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="optimisation steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each precision, alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    arguments = parser.parse_args()
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(arguments.threads)
    data, cfg = batches(arguments.steps)
    model = load_classifier(cfg.model, cfg.data.num_labels, cfg.training.dropout).to(arguments.device)
    device = torch.device(arguments.device)
    speeds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    examples_per_second(model, Placement(device, "fp32"), data[:2])  # warm-up: allocator, kernels
    for _ in range(arguments.rounds):
        for precision, runs in speeds.items():
            runs.append(examples_per_second(model, Placement(device, precision), data))
    native = cpu_has_native_bf16() if device.type == "cpu" else torch.cuda.is_bf16_supported(including_emulation=False)
    print(
        f"MiniLM, batches of 16 tweets, {arguments.steps} steps x {arguments.rounds} rounds, {arguments.threads} "
        f"threads, {device}; native bf16: {'yes' if native else 'no (emulated)'}"
    )
    for precision, runs in speeds.items():
        print(
            f"{precision:<5} {statistics.median(runs):7.1f} examples/s (rounds: {', '.join(f'{r:.1f}' for r in runs)})"
        )
    ratio = statistics.median(speeds["bf16"]) / statistics.median(speeds["fp32"])
    print(f"bf16 / fp32: {ratio:.2f}x")


if __name__ == "__main__":
    main()
