# Measurements for issue 17 (the redesign), run on a checkout of commit d74ed8f placed at
# /tmp/bench_repo (the code before the redesign), on the 2-core AMD EPYC machine. results.jsonl
# holds every run. measure.py: `python measure.py ckpt|setattr|compile`.
"""Measurements for issue 17 item 4, on the code before the redesign (commit d74ed8f).
Usage: python measure.py ckpt|setattr|compile  -> appends JSON lines to /tmp/measure.jsonl"""
import json, sys, time, shutil, tempfile
from pathlib import Path
sys.path.insert(0, str(Path("/tmp/bench_repo") / "src"))
sys.path.insert(0, str(Path("/tmp/bench_repo") / "tests"))
import cnnlab, cnnlab.train as T
assert str(Path(cnnlab.__file__)).startswith("/tmp/bench_repo"), cnnlab.__file__
from conftest import compose_config
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from cnnlab.lit import LitClassifier

OUT = Path("/tmp/measure.jsonl")
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "~logger"]

def run(overrides, label, **extra):
    d = Path(tempfile.mkdtemp(prefix="m-", dir="/work"))  # same disk as the checkout
    cfg = compose_config(overrides + QUIET, d / "run")
    t = time.perf_counter()
    r = T.run(cfg)
    wall = time.perf_counter() - t
    ck = sorted(p.name for p in (d / "run" / "checkpoints").glob("*.ckpt"))
    size = sum(p.stat().st_size for p in (d / "run" / "checkpoints").glob("*.ckpt"))
    rec = dict(label=label, wall_s=round(wall, 2), train_s=r["train_s"], val_s=r["val_s"],
               checkpoint_s=r["checkpoint_s"], images_per_s=r["train_images_per_s"],
               epochs=r["epochs_completed"], test_acc=r["test_acc"], ckpts=ck, ckpt_mb=round(size/2**20), **extra)
    print(json.dumps(rec), flush=True)
    with OUT.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    shutil.rmtree(d)

def plain(best, **kw):  # Lightning's own: a second ModelCheckpoint writing last.ckpt every epoch
    return ModelCheckpoint(**kw)

what = sys.argv[1]
if what == "ckpt":
    base = ["experiment=alexnet", "dataset.train_subset=320", "dataset.val_size=64",
            "dataset.test_subset=64", "trainer.max_epochs=4", "optimizer.lr=0.01"]
    orig = (T.LastCheckpoint, T.BackgroundModelCheckpoint, T.CheckpointWriter)
    for rep in range(2):
        for variant in ("background_writer+link", "sync+link", "lightning_plain", "lightning_async"):
            T.LastCheckpoint, T.BackgroundModelCheckpoint, T.CheckpointWriter = orig
            ov = list(base)
            if variant == "sync+link":
                ov.append("background_checkpoints=false")
            if variant.startswith("lightning"):
                T.LastCheckpoint, T.BackgroundModelCheckpoint = plain, ModelCheckpoint
                io = TorchCheckpointIO if variant == "lightning_plain" else AsyncCheckpointIO
                T.CheckpointWriter = lambda enabled, io=io: io()
            run(ov, variant, rep=rep)
elif what == "setattr":
    base = ["experiment=lenet", "trainer.max_epochs=3"]
    orig = LitClassifier.__setattr__
    for rep in range(4):
        for variant in ("bypass", "nn.Module"):
            if variant == "bypass":
                LitClassifier.__setattr__ = orig
            else:
                LitClassifier.__setattr__ = lambda self, n, v: super(LitClassifier, self).__setattr__(n, v)
            run(base, "setattr_" + variant, rep=rep)
elif what == "compile":
    for rep in range(2):
        for variant in ("eager", "compile"):
            run(["experiment=lenet", f"compile={'true' if variant == 'compile' else 'false'}"],
                "lenet10_" + variant, rep=rep)
