"""``make bench`` / ``cnnlab-bench``: cnnlab's training throughput against the loop
every student writes, on the same machine, model, batch size and number of steps.

(a) reference: torchvision ``FashionMNIST`` + per-sample ``Resize``/``ToTensor`` +
    ``DataLoader(shuffle=True, num_workers=2)`` + a plain PyTorch SGD step;
(b) the same plain loop over cnnlab's data path (uint8 tensor, index slicing, per-batch
    transforms on the training device, channels_last);
(c) cnnlab's full runner (``cnnlab.cli.train.run``: Lightning Trainer, TensorBoard logging on);
with ``--floor`` also a bare Lightning loop (``Trainer(barebones=True)``, a minimal module):
how much of (c)'s overhead is Lightning's own.

The cases are the course recipes (LeNet on a CPU; also AlexNet, VGG-11 and ResNet-18 on
a GPU, where (b), (c) and the floor use ``trainer=gpu`` and (a) PyTorch's defaults). The three
run interleaved (in reverse order every other time), ``repeats`` times, after ``warmup-repeats``
untimed rounds (one on a GPU); reported are the median images/s of each and the median of the
per-repeat ratios. Also measured: the time
from starting ``cnnlab-train`` to its first training step. Results go to ``bench.json``.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.data.sources import SPLIT_FILES, locate
from cnnlab.devices import device_description, pick_device
from cnnlab.resolvers import config_dir, project_root
from cnnlab.runs.results import read_results
from cnnlab.training.allocator import keep_freed_memory

# The benchmark cases are the course recipes (experiments/<name>.yaml): model, image size
# (LeNet 28, AlexNet 224, VGG-11 224, ResNet-18 96 px), batch size and learning rate. The recipe's
# learning rate matters: the default one (LeNet's 0.9) makes AlexNet diverge in a few steps.
CASES = ("lenet", "alexnet", "vgg11", "resnet18")


def torchvision_root(cache: Path | None = None) -> Path:
    """A torchvision-layout copy (``FashionMNIST/raw``, uncompressed) of the offline files, so
    the reference loop reads exactly what a student's ``FashionMNIST(root)`` reads. Made once,
    in ``data/torchvision`` of the project unless ``cache`` says otherwise."""
    cache = cache or project_root() / "data" / "torchvision"
    raw = cache / "FashionMNIST" / "raw"
    source = locate("fashion_mnist", project_root() / "data")
    raw.mkdir(parents=True, exist_ok=True)
    for stem in (s for pair in SPLIT_FILES.values() for s in pair):
        target = raw / stem
        if target.exists():
            continue
        gz, plain = source / f"{stem}.gz", source / stem
        if gz.exists():
            with gzip.open(gz) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copyfile(plain, target)
    return cache


def compose(
    experiment: str, batch_size: int | None, steps: int | None, out: Path, extra: list[str]
) -> Any:
    """The runner's config for one course recipe (one epoch, no validation or test); ``batch_size``
    None keeps the recipe's; ``extra`` overrides (``trainer=gpu`` on a GPU)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    overrides = [
        f"experiment={experiment}",
        *([f"dataset.batch_size={batch_size}"] if batch_size else []),
        "dataset.val_size=0",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "test=false",
        *extra,
    ]
    if steps:
        overrides.append(f"++trainer.limit_train_batches={steps}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = hydra_compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def trainer_overrides(device: torch.device) -> list[str]:
    """On a GPU the runner (and loop (b) with it) uses cnnlab's GPU recipe, ``trainer=gpu``: bf16
    autocast and cuDNN autotuning; the reference loop (a) stays as the course writes it."""
    return ["trainer=gpu"] if device.type == "cuda" else []


def runner_initial_model(cfg: Any) -> torch.nn.Module:
    """The model with the runner's initial weights (it seeds the RNG with ``cfg.seed`` and then
    builds the model). With cnnlab's seeded batch order, loop (b) then computes the runner's
    very numbers, so (b) and (c) differ in the framework only, not in the work."""
    from hydra.utils import instantiate

    torch.manual_seed(cfg.seed)
    return instantiate(cfg.model)


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """The median of the per-repeat ratios: each pair ran seconds apart, on the same machine
    state, so this is steadier than a ratio of medians on a machine whose speed drifts."""
    return statistics.median(x / y for x, y in zip(numerators, denominators, strict=True))


def _sgd_steps(
    model, optimizer, batches, device: torch.device, steps: int | None, bf16: bool = False
) -> float:
    """Images per second of a plain PyTorch loop over ``batches`` ((x, y) pairs), from the start
    of the iteration (first batch fetch included, as in a real epoch) to the last step. ``bf16``:
    forward and loss under bf16 autocast, as Lightning's ``precision=bf16-mixed`` does."""
    model.train()
    images = 0
    start = time.perf_counter()
    for i, (x, y) in enumerate(batches):
        if steps is not None and i >= steps:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        images += y.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def reference_loop(cfg: Any, tv_root: Path, device: torch.device, steps: int | None) -> float:
    """(a) The course's loop: per-sample PIL transforms, collate, worker processes."""
    import torchvision
    from hydra.utils import instantiate
    from torchvision import transforms

    size = cfg.dataset.image_size
    steps_list = ([transforms.Resize(size)] if size != 28 else []) + [transforms.ToTensor()]
    dataset = torchvision.datasets.FashionMNIST(
        str(tv_root), train=True, download=False, transform=transforms.Compose(steps_list)
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.dataset.batch_size, shuffle=True, num_workers=2
    )
    model = runner_initial_model(cfg).to(device)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    # The course's loop runs with PyTorch's defaults: float32, no cuDNN autotuning (which the
    # runner, earlier in this process, may have switched on).
    torch.backends.cudnn.benchmark = False
    return _sgd_steps(model, optimizer, loader, device, steps)


def cnnlab_data_loop(cfg: Any, device: torch.device, steps: int | None) -> float:
    """(b) The same plain loop over cnnlab's data path (no Lightning)."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.dataset)
    datamodule.setup()
    images, labels = datamodule.splits["train"]
    datamodule.splits["train"] = (images.to(device), labels.to(device))
    loader = datamodule.train_dataloader()
    batches = (datamodule.on_after_batch_transfer(b, 0) for b in loader)
    model = runner_initial_model(cfg).to(device)
    if cfg.dataset.channels_last:  # as LitClassifier.setup does: weights in the batches' layout
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    # The runner's numerics and cuDNN setting (trainer=gpu on a GPU), so that (b) and (c) differ
    # in the framework only.
    torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark"))
    return _sgd_steps(model, optimizer, batches, device, steps, bf16=uses_bf16(cfg))


def uses_bf16(cfg: Any) -> bool:
    return str(cfg.trainer.precision).startswith("bf16")


def runner(cfg: Any) -> float:
    """(c) cnnlab's full runner: Lightning Trainer, logging on, checkpoints."""
    from cnnlab.cli.train import run

    results = run(cfg)
    if results["status"] != "ok":  # a diverged run stops early: its images/s would mean nothing
        raise RuntimeError(f"the runner's run ended {results['status']}: {results.get('error')}")
    return float(results["train_images_per_s"])


def lightning_floor(cfg: Any, steps: int | None) -> float:
    """(``--floor``) Lightning's own loop with nothing of cnnlab's runner: ``Trainer(barebones=
    True)`` and a minimal LightningModule (the model, cross-entropy, the optimizer) over cnnlab's
    data module, from the runner's weights. What any Lightning runner pays on top of (b)."""
    import lightning as L
    from hydra.utils import instantiate

    class Minimal(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = runner_initial_model(cfg)
            self.images, self.start, self.end = 0, 0.0, 0.0

        def setup(self, stage: str) -> None:  # weights in the batches' layout, as the runner
            if cfg.dataset.channels_last:
                self.model.to(memory_format=torch.channels_last)

        def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def on_train_epoch_start(self) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, outputs: Any, batch: tuple, batch_idx: int) -> None:
            self.images += batch[1].shape[0]
            if self.device.type == "cuda" and batch_idx + 1 == self.trainer.num_training_batches:
                torch.cuda.synchronize(self.device)  # count the queued GPU work, as the runner
            self.end = time.perf_counter()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return instantiate(cfg.optimizer)(self.model.parameters())

    module = Minimal()
    trainer = L.Trainer(
        barebones=True,
        logger=False,
        enable_checkpointing=False,
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        benchmark=cfg.trainer.get("benchmark"),
        max_epochs=1,
        limit_train_batches=steps or 1.0,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=instantiate(cfg.dataset))
    return module.images / (module.end - module.start)


def startup_seconds(out: Path) -> float | None:
    """Seconds from launching ``cnnlab-train`` to its first training step (``startup_s`` in the
    run's results.json): imports, config, data (decoded copy cached by an earlier run), model."""
    exe = Path(sys.executable).with_name("cnnlab-train")
    command = [
        str(exe),
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=2",
        "test=false",
        "dataset.val_size=0",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out}",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return (read_results(out) or {}).get("startup_s")


def startup_report(work: Path, repeats: int) -> dict[str, Any]:
    """The median start-up of ``repeats`` launches: imports alone vary by a few tenths of a
    second from one launch to the next."""
    runs = [startup_seconds(work / f"startup-{r}") for r in range(repeats)]
    measured = [x for x in runs if x is not None]
    return {
        "startup_s": statistics.median(measured) if measured else None,
        "startup_all_runs": runs,
    }


def bench_case(
    name: str,
    batch_size: int | None,
    steps: int | None,
    repeats: int,
    device: torch.device,
    tv_root: Path,
    work: Path,
    floor: bool = False,
    warmup: int = 0,
) -> dict[str, Any]:
    """``warmup`` untimed rounds of every loop come first: on a GPU, CUDA loads its kernels
    lazily and cuDNN autotunes each shape once per process, which would land on whichever loop
    ran first."""
    loops = {
        "reference": lambda cfg: reference_loop(cfg, tv_root, device, steps),
        "cnnlab_data": lambda cfg: cnnlab_data_loop(cfg, device, steps),
        "runner": runner,
    }
    if floor:
        loops["lightning_floor"] = lambda cfg: lightning_floor(cfg, steps)
    rates: dict[str, list[float]] = {k: [] for k in loops}
    overrides = trainer_overrides(device)
    for r in range(-warmup, repeats):
        # Interleaved, in reverse order every other repeat: a machine that slows down or speeds
        # up while the bench runs hits all three alike.
        cfg = compose(name, batch_size, steps, work / f"{name}{r}", overrides)
        for loop in list(loops) if r % 2 == 0 else reversed(loops):
            gc.collect()  # the last loop's garbage is not collected on this one's clock
            rate = loops[loop](cfg)
            if r >= 0:
                rates[loop].append(rate)
    median = {k: statistics.median(v) for k, v in rates.items()}

    def paired(numerator: str, denominator: str) -> float:
        return paired_ratio(rates[numerator], rates[denominator])

    def overhead(loop: str) -> tuple[float, list[float] | None, float]:
        """Percent slower than (b): the median of the per-repeat pairs, and their quartiles
        (how far one repeat could be trusted); and the same median as milliseconds a step."""
        return (
            round(100 * (1 - paired(loop, "cnnlab_data")), 1),
            overhead_quartiles(rates[loop], rates["cnnlab_data"]),
            overhead_ms_per_step(rates[loop], rates["cnnlab_data"], cfg.dataset.batch_size),
        )

    case = {
        "model": name,
        "image_size": cfg.dataset.image_size,
        "batch_size": cfg.dataset.batch_size,
        "steps": steps or "one epoch",
        "repeats": repeats,
        "warmup_repeats": warmup,
        "images_per_s": {k: round(v, 1) for k, v in median.items()},
        "all_runs": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "data_path_speedup_b_over_a": round(paired("cnnlab_data", "reference"), 2),
        "runner_speedup_c_over_a": round(paired("runner", "reference"), 2),
    }
    (
        case["framework_overhead_pct"],
        case["framework_overhead_pct_quartiles"],
        case["framework_overhead_ms_per_step"],
    ) = overhead("runner")
    if floor:
        (
            case["lightning_floor_overhead_pct"],
            case["lightning_floor_overhead_pct_quartiles"],
            case["lightning_floor_overhead_ms_per_step"],
        ) = overhead("lightning_floor")
    return case


def overhead_ms_per_step(runner: list[float], plain: list[float], batch_size: int) -> float:
    """The median over repeats of the extra time a step (one batch) takes, in milliseconds.

    A framework costs about the same time every step, whatever the step computes: this is the
    number that carries over to other batch sizes and models, where the percentage does not.
    """
    extra = [1000 * batch_size * (1 / c - 1 / b) for c, b in zip(runner, plain, strict=True)]
    return round(statistics.median(extra), 3)


def overhead_quartiles(runner: list[float], plain: list[float]) -> list[float] | None:
    """First and third quartile of the per-repeat overheads in percent (None below 2 repeats)."""
    if len(runner) < 2:
        return None
    overheads = [100 * (1 - c / b) for c, b in zip(runner, plain, strict=True)]
    low, _, high = statistics.quantiles(overheads, n=4)
    return [round(low, 1), round(high, 1)]


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cnnlab-bench on {report['device']}")
    for column in (
        "model",
        "size",
        "batch",
        "(a) reference",
        "(b) cnnlab data",
        "(c) runner",
        "b/a",
        "c/a",
        "c vs b overhead",
    ):
        table.add_column(column, justify="right")
    for case in report["cases"]:
        ips = case["images_per_s"]
        table.add_row(
            case["model"],
            str(case["image_size"]),
            str(case["batch_size"]),
            f"{ips['reference']:,.0f}/s",
            f"{ips['cnnlab_data']:,.0f}/s",
            f"{ips['runner']:,.0f}/s",
            f"{case['data_path_speedup_b_over_a']:.2f}x",
            f"{case['runner_speedup_c_over_a']:.2f}x",
            f"{case['framework_overhead_pct']:+.1f}%",
        )
    console = Console()
    console.print(table)
    for case in report["cases"]:
        if case.get("framework_overhead_pct_quartiles"):
            low, high = case["framework_overhead_pct_quartiles"]
            console.print(
                f"{case['model']}: framework overhead per repeat, quartiles {low:+.1f}% .. "
                f"{high:+.1f}% over {case['repeats']} repeats (the table: their paired median)"
            )
        console.print(
            f"{case['model']}: framework overhead a step (batch {case['batch_size']}): "
            f"{case['framework_overhead_ms_per_step']:+.2f} ms (median over the repeats)"
        )
        if "lightning_floor_overhead_pct" in case:
            console.print(
                f"{case['model']}: bare Lightning (Trainer(barebones=True), minimal module): "
                f"{case['images_per_s']['lightning_floor']:,.0f}/s, overhead vs (b) "
                f"{case['lightning_floor_overhead_pct']:+.1f}%, "
                f"{case['lightning_floor_overhead_ms_per_step']:+.2f} ms a step: the part of "
                "(c)'s that is Lightning's own loop"
            )
    if report.get("startup_s") is not None:
        runs = ", ".join(f"{x:.2f}" for x in report["startup_all_runs"] if x is not None)
        console.print(
            f"cnnlab-train start to first training step: {report['startup_s']:.2f} s "
            f"(median of {runs})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cnnlab-bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=list(CASES),
        default=None,
        help="default: lenet on CPU; lenet alexnet vgg11 resnet18 on a GPU",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: the course recipe's (128 or 256)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per measurement (default: one full epoch)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=15,
        help="interleaved repeats of the three loops (default 15: one run of the same loop "
        "varies by 10-20 %% on a shared 2-core VM, and the overhead goal is 5 %%)",
    )
    parser.add_argument(
        "--warmup-repeats",
        type=int,
        default=None,
        help="untimed rounds first (default: 1 on a GPU, for lazy kernel loading and cuDNN "
        "autotuning; 0 on a CPU)",
    )
    parser.add_argument("--startup-repeats", type=int, default=5, help="cnnlab-train launches")
    parser.add_argument("--no-startup", action="store_true", help="skip the start-up timing")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also time a bare Lightning loop (Trainer(barebones=True), minimal module): the "
        "overhead any Lightning runner has",
    )
    parser.add_argument("--out", type=Path, default=project_root() / "outputs" / "bench")
    args = parser.parse_args(argv)

    # cnnlab-train's allocator settings, for all three loops alike: the comparison is of the
    # loops, on the same process (see cnnlab.training.allocator).
    malloc_tuned = keep_freed_memory()
    device = pick_device("auto")
    gpu = device.type == "cuda"
    models = args.models or (list(CASES) if gpu else ["lenet"])
    args.out.mkdir(parents=True, exist_ok=True)
    tv_root = torchvision_root()
    report: dict[str, Any] = {
        "device": device_description(device),
        "torch": torch.__version__,
        "malloc_keeps_freed_memory": malloc_tuned,
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        work = Path(tmp)
        for name in models:
            case = bench_case(
                name,
                args.batch_size,
                args.steps,
                args.repeats,
                device,
                tv_root,
                work,
                floor=args.floor,
                warmup=args.warmup_repeats if args.warmup_repeats is not None else int(gpu),
            )
            report["cases"].append(case)
        if not args.no_startup:
            report.update(startup_report(work, args.startup_repeats))
    path = args.out / "bench.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
