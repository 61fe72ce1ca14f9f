"""cnnlab: the classic CNN architectures of the lecture, one Lightning loop, Hydra configs."""

__version__ = "0.1.0"
