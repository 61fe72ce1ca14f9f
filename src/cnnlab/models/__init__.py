"""The architecture zoo: pure ``nn.Module`` classes that know nothing of Lightning or Hydra."""

from cnnlab.models.alexnet import AlexNet
from cnnlab.models.googlenet import GoogLeNet, Inception
from cnnlab.models.layers import InterChannelLRN, IntraChannelLRN, LocallyConnected2d
from cnnlab.models.lenet import LeNet
from cnnlab.models.resnet import (
    RESNET_TABLE,
    Bottleneck,
    Residual,
    ResNet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from cnnlab.models.vgg import VGG, VGG_CONFIGS, vgg11, vgg13, vgg16, vgg19, vgg_block

__all__ = [
    "RESNET_TABLE",
    "VGG",
    "VGG_CONFIGS",
    "AlexNet",
    "Bottleneck",
    "GoogLeNet",
    "Inception",
    "InterChannelLRN",
    "IntraChannelLRN",
    "LeNet",
    "LocallyConnected2d",
    "ResNet",
    "Residual",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg_block",
]
