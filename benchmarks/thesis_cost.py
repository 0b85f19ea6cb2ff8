"""What each thesis cell costs to train, estimated from measured images per second.

For every cell of ``studies/thesis/table_4_6.csv`` the cell's own model (its
architecture, variant, classes, input size, init) takes a few real training
steps on random input of the dataset's shape: forward, cross-entropy,
backward, a Nesterov SGD step with the cell's weight-decay groups. Images per
second are measured once per distinct model and batch (after one warm-up
step), and the cell's training time is estimated as

    epochs x training images / (images per second)

with the reproduction protocol's training images (MNIST 60,000, CIFAR 50,000,
SVHN train + extra minus the 6,000 validation images = 598,388). Validation
and test passes, data loading and logging are left out (a few percent on the
tensor data path). The device is whatever ``--device`` says: the numbers are
only as good as the machine they were measured on, and the table says which
one that was. A CPU measurement says nothing exact about a GPU: run this same
script with ``--device cuda`` there.

On the CPU the default is one torch thread timed by the process's CPU time
(``time.process_time``): images per core-second, which other programs on a
busy machine do not change much (wall-clock time would). ``--clock wall``
times wall-clock seconds instead (what a GPU run uses).

Usage::

    .venv/bin/python benchmarks/thesis_cost.py                     # every cell, this CPU
    .venv/bin/python benchmarks/thesis_cost.py 'preact_resnet*' --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hpstudy.data import describe_dataset  # noqa: E402
from hpstudy.models import create_model, init_weights, model_info  # noqa: E402
from hpstudy.reproduce import cell_config, load_table, select_cells  # noqa: E402
from hpstudy.train import build_optimizer, optimizer_params  # noqa: E402

TRAIN_IMAGES = {"mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000,
                "svhn": 73_257 + 531_131 - 6_000}
"""Images that train per epoch under the reproduction protocol (val_split 0; SVHN's fixed 6,000)."""


def images_per_second(cfg, batch: int, device: str, min_s: float, min_steps: int,
                      clock: str = "wall") -> float:
    """Training throughput of ``cfg``'s model: a warm-up step, then timed steps.

    ``clock``: ``wall`` (``perf_counter``) or ``cpu`` (this process's CPU time).
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    meta = describe_dataset(cfg.data.dataset, **cfg.data.options)
    size = max(meta.image_size, model_info(cfg.model.arch).min_size)
    torch.manual_seed(0)
    net = create_model(cfg.model.arch, num_classes=meta.num_classes, in_chans=meta.in_chans,
                       input_size=size, **cfg.model.kwargs()).to(device)
    init_weights(net, cfg.model.init)
    net.train()
    opt = build_optimizer(optimizer_params(net, cfg.train), cfg.train)
    x = torch.randn(batch, meta.in_chans, size, size, device=device)
    y = torch.randint(0, meta.num_classes, (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    step()  # warm-up: allocations, kernel selection
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    n, t0 = 0, now()
    while n < min_steps or now() - t0 < min_s:
        step()
        n += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return n * batch / (now() - t0)


def hardware(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return (f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
            f"thread(s) of {os.cpu_count()} cores (torch {torch.__version__})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("cells", nargs="*", help="cell ids or patterns (default: all 36)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32,
                   help="measuring batch, capped by the recipe's (default 32)")
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--min-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--clock", choices=("cpu", "wall"), default=None,
                   help="cpu: process CPU time (default on the CPU), wall: wall-clock")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    clock = args.clock or ("cpu" if args.device == "cpu" else "wall")
    unit = f"images/{'core-' if clock == 'cpu' else ''}s ({args.device})"

    cells = select_cells(load_table(), args.cells or None)
    measured: dict[str, float] = {}
    rows = []
    for cell in cells:
        cfg = cell_config(cell)
        batch = min(args.batch, cfg.data.batch_size)
        key = json.dumps([cfg.model.arch, cfg.model.kwargs(), cfg.data.dataset, batch,
                          cfg.train.weight_decay_on], sort_keys=True)
        if key not in measured:
            measured[key] = images_per_second(cfg, batch, args.device, args.min_seconds,
                                              args.min_steps, clock)
        ips = measured[key]
        images = cfg.train.max_epochs * TRAIN_IMAGES[cfg.data.dataset]
        rows.append({"cell": cell.id, "batch": batch, "images_per_s": round(ips, 1),
                     "epochs": cfg.train.max_epochs, "train_images": images,
                     "hours": round(images / ips / 3600, 1)})
        print(f"  {cell.id}: {ips:.1f} {unit}", file=sys.stderr, flush=True)

    print(f"measured on: {hardware(args.device)}; {clock} clock; training steps only "
          f"(forward, backward, Nesterov step), batch {args.batch} or the recipe's if smaller")
    print("")
    print(f"| cell | batch | {unit} | epochs | images trained | est. hours ({args.device}, "
          f"{'one core' if clock == 'cpu' else 'wall'}) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cell']} | {r['batch']} | {r['images_per_s']:,.1f} | {r['epochs']} | "
              f"{r['train_images']:,} | {r['hours']:,.1f} |")
    total = sum(r["hours"] for r in rows)
    print(f"| all {len(rows)} cells | | | | {sum(r['train_images'] for r in rows):,} | "
          f"{total:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"hardware": hardware(args.device), "clock": clock,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
