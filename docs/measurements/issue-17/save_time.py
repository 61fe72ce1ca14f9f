"""Time one checkpoint write of the AlexNet course recipe (what a second, unlinked last.ckpt costs
in an epoch that improves the best) with Lightning's own TorchCheckpointIO, on the checkout's disk."""
import json, statistics, sys, tempfile, time, os
from pathlib import Path
sys.path.insert(0, "/tmp/bench_repo/src"); sys.path.insert(0, "/tmp/bench_repo/tests")
import torch
from conftest import compose_config
from hydra.utils import instantiate
from lightning.fabric.plugins import TorchCheckpointIO
cfg = compose_config(["experiment=alexnet"])
model = instantiate(cfg.model)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
ckpt = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "optimizer_states": [opt.state_dict()], "epoch": 1}
io = TorchCheckpointIO()
times = []
with tempfile.TemporaryDirectory(dir="/work") as d:
    for i in range(7):
        p = Path(d) / f"x{i}.ckpt"
        t = time.perf_counter(); io.save_checkpoint(ckpt, p); times.append(time.perf_counter() - t)
        size = p.stat().st_size
        p.unlink()
rec = {"label": "alexnet_checkpoint_write", "size_mb": round(size / 2**20, 1),
       "seconds": [round(x, 3) for x in times], "median_s": round(statistics.median(times), 3)}
print(rec)
open("/tmp/measure.jsonl", "a").write(json.dumps(rec) + "\n")
