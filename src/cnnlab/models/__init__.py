"""The architecture zoo: pure ``nn.Module`` classes that know nothing of Lightning or Hydra."""

from cnnlab.models.lenet import LeNet

__all__ = ["LeNet"]
