"""The course's exercise items, as the answer sheet (docs/ANSWERS.md) presents them.

Each item is one make target of the Makefile, which says what it runs (experiment files, sweeps,
QUICK_* and LAPTOP_* overrides); this catalogue adds what the sheet needs around it: the
lecture's question, the section, how many seeds, which variant is the baseline the others are
compared with, and how long it is expected to take (for running the longest first).
"""

from __future__ import annotations

from dataclasses import dataclass

# A family of items by the image size its nets train at. "28": LeNet-sized nets, which train at
# the course recipe on any CPU; "big": 96-224 px nets, whose full recipe needs a GPU and which
# run at the family's laptop protocol (Makefile LAPTOP_*) on a CPU.
SMALL, BIG = "28", "big"
TRAIN, ANALYZE = "train", "analyze"


@dataclass(frozen=True)
class Item:
    target: str  # the make target
    section: str  # LeNet, AlexNet, VGG, GoogLeNet, ResNet, Lecture extras
    title: str  # how EXERCISES.md names it
    question: str  # the lecture's question, one line
    family: str = SMALL
    kind: str = TRAIN
    seeds: int = 3  # seeds per variant (1 for items that compare nothing)
    # The label of the row the others are compared with (the course recipe's), as the report
    # writes it; None: compared with the best row.
    baseline: str | None = None
    # Relative running time at full scale, for longest-first runs on a GPU; not a measurement.
    cost: int = 1
    look_at: str = ""  # what in the figure or table answers the question
    protocol: str = ""  # the laptop protocol of a big-net item outside its section's family
    # Whether the question is about speed: the sheet shows images/s and wall time only then
    # (and for the laptop scale's 15-minute promise), measured on an otherwise idle machine.
    speed: bool = False
    # Whether the question is about training itself: the answer cites the final training loss.
    loss: bool = False

    @property
    def trains(self) -> bool:
        return self.kind == TRAIN

    @property
    def laptop_protocol(self) -> str | None:
        """Which family's laptop protocol (Makefile LAPTOP_*) the item runs at SCALE=laptop."""
        if self.family != BIG or not self.trains:
            return None
        return self.protocol or self.section


SECTIONS = ("LeNet", "AlexNet", "VGG", "GoogLeNet", "ResNet", "Lecture extras")
# The family recipe items: their laptop-scale runs document each protocol (docs/ANSWERS.md).
PROTOCOL_RECIPES = {
    "AlexNet": "alexnet",
    "VGG": "vgg11",
    "GoogLeNet": "googlenet",
    "ResNet": "resnet18",
}

ITEMS: tuple[Item, ...] = (
    # --- LeNet ---------------------------------------------------------------------------------
    Item(
        "lenet",
        "LeNet",
        "Course recipe",
        "How well does LeNet-5 (sigmoid, average pooling, SGD lr 0.9) learn Fashion-MNIST?",
        look_at="the slow start of the sigmoid net in the training loss",
    ),
    Item(
        "lenet-pool",
        "LeNet",
        "I: average vs max pooling",
        "Replace average pooling with max pooling. What happens?",
        baseline="pool=avg",
    ),
    Item(
        "lenet-kernel",
        "LeNet",
        "II: convolution window",
        "Adjust the convolution window size (3x3, 5x5, 7x7).",
        baseline="kernel_sizes=[5,5]",
    ),
    Item(
        "lenet-channels",
        "LeNet",
        "II: output channels",
        "Adjust the number of output channels of the conv layers.",
        baseline="conv_channels=[6,16]",
        look_at="accuracy against parameters and images/s",
        speed=True,
    ),
    Item(
        "lenet-activation",
        "LeNet",
        "II: activation",
        "Replace the sigmoid by tanh or ReLU.",
        baseline="activation=sigmoid",
        look_at="ReLU at the recipe's lr 0.9 against ReLU at lr 0.1",
    ),
    Item(
        "lenet-conv-layers",
        "LeNet",
        "II: conv layers",
        "Adjust the number of convolution layers.",
        baseline="ablation=[]",
    ),
    Item(
        "lenet-fc-layers",
        "LeNet",
        "II: FC layers",
        "Adjust the number of fully connected layers.",
        baseline="fc_widths=[120,84]",
    ),
    Item(
        "lenet-lr",
        "LeNet",
        "II: learning rate",
        "Adjust the learning rate.",
        baseline="lr=0.9",
        look_at="the training loss per step",
        loss=True,
    ),
    Item(
        "lenet-init",
        "LeNet",
        "II: initialisation",
        "Adjust the initialisation (Xavier, Kaiming, PyTorch's default).",
        baseline="init=xavier",
        look_at="the first epochs",
    ),
    Item(
        "lenet-epochs",
        "LeNet",
        "II: epochs",
        "Adjust the number of epochs.",
        baseline="max_epochs=10",
        look_at="where validation accuracy stops rising",
    ),
    Item(
        "lenet-improved",
        "LeNet",
        "II: improved LeNet",
        "Build a better network on LeNet's basis (goal: test accuracy >= 0.91 in 10 epochs).",
        cost=2,
    ),
    Item(
        "lenet-optuna",
        "LeNet",
        "II: search lr and widths",
        "Search learning rate and conv widths automatically (Optuna, 20 trials).",
        seeds=1,
        cost=8,
    ),
    Item(
        "lenet-mnist",
        "LeNet",
        "III: improved LeNet on MNIST",
        "Try the improved network on the original MNIST (goal: test accuracy >= 0.99).",
        cost=2,
    ),
    Item(
        "lenet-activations",
        "LeNet",
        "IV: activations, sweaters vs coats",
        "Display the first and second layer's activations for sweaters and coats.",
        seeds=1,
        look_at="the two activation figures below the curves: one row per image (pullovers, then "
        "coats), the input and the channel maps of the first and the second conv layer",
    ),
    # --- AlexNet -------------------------------------------------------------------------------
    Item(
        "alexnet",
        "AlexNet",
        "Course recipe",
        "How well does AlexNet (224 px, SGD lr 0.01) learn Fashion-MNIST?",
        family=BIG,
        seeds=1,
        cost=6,
        speed=True,
    ),
    Item(
        "alexnet-epochs",
        "AlexNet",
        "I: 30 epochs, vs LeNet",
        "Train for more epochs. How do the results differ from LeNet's, and why?",
        family=BIG,
        seeds=1,
        cost=18,
        look_at="AlexNet still rising where LeNet has flattened",
    ),
    Item(
        "alexnet-small",
        "AlexNet",
        "II: simplified AlexNet; AlexNet for 28x28",
        "Simplify AlexNet to train faster without losing accuracy; design one for 28x28.",
        family=BIG,
        seeds=1,
        cost=8,
        speed=True,
    ),
    Item(
        "alexnet-batch-size",
        "AlexNet",
        "III: batch size",
        "Change the batch size: throughput, accuracy and memory?",
        family=BIG,
        seeds=1,
        baseline="batch_size=128",
        cost=20,
        speed=True,
    ),
    Item(
        "alexnet-analysis",
        "AlexNet",
        "IV: computational analysis",
        "Memory footprint, compute per layer, and the role of memory bandwidth.",
        kind=ANALYZE,
        seeds=1,
    ),
    Item(
        "lenet-dropout-relu",
        "AlexNet",
        "V: dropout and ReLU in LeNet-5",
        "Apply dropout and ReLU to LeNet-5. Does it improve?",
        baseline="ablation=[]",
        look_at="ReLU at the recipe's lr 0.9 against ReLU at lr 0.1",
    ),
    Item(
        "lenet-preprocessing",
        "AlexNet",
        "V: preprocessing",
        "Can preprocessing (normalisation, augmentation) improve things further?",
        baseline="ablation=[]",
    ),
    # --- VGG -----------------------------------------------------------------------------------
    Item(
        "vgg11",
        "VGG",
        "VGG-11 recipe",
        "How well does VGG-11 (conv widths / 4, 224 px) learn Fashion-MNIST?",
        family=BIG,
        seeds=1,
        cost=8,
    ),
    Item(
        "vgg-layers",
        "VGG",
        "I: layer dimensions",
        "Printing the layers shows 8 blocks, yet VGG-11 has 11 layers: where are the rest?",
        kind=ANALYZE,
        seeds=1,
    ),
    Item(
        "vgg-vs-alexnet",
        "VGG",
        "II: VGG vs AlexNet",
        "VGG is slower and needs more memory than AlexNet. Why?",
        kind=ANALYZE,
        seeds=1,
    ),
    Item(
        "vgg-image-size",
        "VGG",
        "III: image size",
        "Change the image size from 224 to 96 px. What changes?",
        family=BIG,
        seeds=1,
        cost=10,
        speed=True,
    ),
    Item(
        "vgg-depth",
        "VGG",
        "IV: VGG-16 and VGG-19",
        "Build VGG-16 and VGG-19 from the paper's Table 1.",
        family=BIG,
        seeds=1,
        baseline="arch=vgg11",
        cost=30,
        loss=True,
    ),
    # --- GoogLeNet -----------------------------------------------------------------------------
    Item(
        "googlenet",
        "GoogLeNet",
        "Recipe",
        "How well does GoogLeNet (96 px, SGD lr 0.1) learn Fashion-MNIST?",
        family=BIG,
        seeds=1,
        cost=8,
    ),
    Item(
        "googlenet-variants",
        "GoogLeNet",
        "I: BN, Inception-v3, label smoothing, Inception-ResNet",
        "Add batch norm, the Inception-v3 changes, label smoothing, residual connections.",
        family=BIG,
        seeds=1,
        cost=40,
        speed=True,
        baseline="ablation=[]",
    ),
    Item(
        "googlenet-min-size",
        "GoogLeNet",
        "II: minimum image size",
        "What is the smallest image size GoogLeNet works with?",
        kind=ANALYZE,
        seeds=1,
    ),
    Item(
        "googlenet-params",
        "GoogLeNet",
        "III: parameters vs AlexNet and VGG",
        "Compare the parameter counts of AlexNet, VGG and GoogLeNet. How does GoogLeNet "
        "get by with fewer?",
        kind=ANALYZE,
        seeds=1,
    ),
    # --- ResNet --------------------------------------------------------------------------------
    Item(
        "resnet18",
        "ResNet",
        "ResNet-18 recipe",
        "How well does ResNet-18 (96 px, SGD lr 0.05) learn Fashion-MNIST?",
        family=BIG,
        seeds=1,
        cost=4,
    ),
    Item(
        "resnet-inception",
        "ResNet",
        "I: Inception block vs residual block",
        "How does the Inception block relate to the residual block (computation, accuracy, "
        "function classes)?",
        family=BIG,
        seeds=1,
        cost=6,
    ),
    Item(
        "resnet-depth",
        "ResNet",
        "II: ResNet-18/34/50/101/152",
        "Build the variants of the paper's Table 1.",
        family=BIG,
        seeds=1,
        baseline="model=resnet18",
        cost=60,
        speed=True,
        loss=True,
    ),
    Item(
        "resnet-bottleneck",
        "ResNet",
        "III: bottleneck block",
        "Use the bottleneck block of the deeper ResNets in a shallow one.",
        family=BIG,
        seeds=1,
        cost=10,
        speed=True,
        baseline="block=basic",
    ),
    Item(
        "resnet-preact",
        "ResNet",
        "IV: pre-activation",
        "Implement the pre-activation block (BN, ReLU, conv).",
        family=BIG,
        seeds=1,
        cost=10,
        look_at="the early training loss",
        loss=True,
        baseline="preact=False",
    ),
    Item(
        "resnet-plain",
        "ResNet",
        "V: plain vs residual nets",
        "Why does depth alone not help? Plain-18/34 against ResNet-18/34 (He et al. 2016, Fig. 4).",
        family=BIG,
        seeds=1,
        cost=20,
        look_at="the training loss of plain-34 against plain-18",
        loss=True,
    ),
    # --- Lecture extras ------------------------------------------------------------------------
    Item(
        "vanishing-gradient",
        "Lecture extras",
        "Vanishing gradient, sigmoid vs ReLU",
        "How does the gradient reaching the first layers differ between sigmoid and ReLU?",
        baseline="activation=sigmoid",
    ),
    Item(
        "alexnet-lrn",
        "Lecture extras",
        "LRN: none / inter / intra",
        "Does local response normalisation help AlexNet?",
        family=BIG,
        protocol="AlexNet",
        seeds=1,
        cost=18,
        speed=True,
        baseline="lrn=none",
    ),
    Item(
        "lenet-local",
        "Lecture extras",
        "Locally connected first layer",
        "A locally connected layer (no weight sharing) against a convolution.",
        baseline="first_layer=conv",
        cost=4,
        speed=True,
    ),
    Item(
        "lenet-optimizers",
        "Lecture extras",
        "Optimizers",
        "SGD, momentum, Adagrad, RMSProp, Adam and L-BFGS on LeNet-5.",
        baseline="optimizer=sgd lr=0.9",
        cost=12,
        look_at="the training loss per step",
        speed=True,
        loss=True,
    ),
)


def item(target: str) -> Item:
    for candidate in ITEMS:
        if candidate.target == target:
            return candidate
    known = ", ".join(i.target for i in ITEMS)
    raise KeyError(f"no exercise item {target!r}; the items are: {known}")
