"""Cost of LitClassifier's attribute writes with and without the __setattr__ bypass: time one
write of an existing bookkeeping attribute, and count the writes of one LeNet training step."""
import json, sys, timeit, statistics
sys.path.insert(0, "/tmp/bench_repo/src")
import torch
from torch import nn
import lightning as L
from cnnlab.lit import LitClassifier
lit = LitClassifier(nn.Linear(4, 3), torch.optim.SGD)
lit._current_fx_name = "x"
bypass = statistics.median(timeit.repeat(lambda: setattr(lit, "_current_fx_name", "y"), number=100000, repeat=7)) / 100000
plain = statistics.median(timeit.repeat(lambda: nn.Module.__setattr__(lit, "_current_fx_name", "y"), number=100000, repeat=7)) / 100000
# count writes per training step in a real run
counts = {"n": 0}
orig = LitClassifier.__setattr__
def counting(self, name, value):
    counts["n"] += 1
    orig(self, name, value)
LitClassifier.__setattr__ = counting
sys.path.insert(0, "/tmp/bench_repo/tests")
from conftest import compose_config
import cnnlab.train as T, tempfile
d = tempfile.mkdtemp(dir="/work")
cfg = compose_config(["experiment=lenet", "trainer.max_epochs=1", "dataset.val_size=0", "test=false", "~logger",
                      "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "dataset.train_subset=25600"], d + "/run")
r = T.run(cfg)
steps = 100
rec = {"label": "setattr_micro", "bypass_us": round(bypass * 1e6, 3), "nn_module_us": round(plain * 1e6, 3),
       "writes_per_step": round(counts["n"] / steps, 1), "saving_ms_per_step": round(counts["n"] / steps * (plain - bypass) * 1e3, 3),
       "lenet_step_ms": round(1000 * r["train_s"] / steps, 2)}
print(rec)
open("/tmp/measure.jsonl", "a").write(json.dumps(rec) + "\n")
import shutil; shutil.rmtree(d)
