# cnnlab: `make train` and `make test` are all a fresh machine needs (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
DIR    ?= outputs
PORT   ?=

.DEFAULT_GOAL := help
.PHONY: help install install-optuna install-slurm data train eval test test-all test-optuna bench lint \
	tensorboard clean answers answers-sheet

help:  ## list the targets
	@awk -F':.*## ' '/^##@ / {printf "\n%s\n", substr($$0, 5)} \
	  /^[a-zA-Z0-9_-]+:.*## / {printf "  %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)  ## create .venv and install cnnlab with its dev tools

# Optional extras (pyproject.toml), each added to .venv once.
$(VENV)/.installed-extra-%: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,$*]'
	touch $@

install-optuna: $(VENV)/.installed-extra-optuna  ## add Hydra's Optuna sweeper (hparams_search=...; +0.7 s start-up: SciPy)
install-slurm: $(VENV)/.installed-extra-slurm  ## add Hydra's SLURM launcher (hydra/launcher=slurm)

data: install  ## make sure Fashion-MNIST (and MNIST where available) can be read
	@$(BIN)/python -m cnnlab.data --no-download --quiet fashion_mnist \
	  || { if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	         echo "installing Debian's dataset-fashion-mnist"; \
	         apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; fi; \
	       $(BIN)/python -m cnnlab.data fashion_mnist; }
	@$(BIN)/python -m cnnlab.data --no-download mnist || echo "(MNIST only needed for dataset=mnist)"

train: data  ## train the default job (seed LeNet recipe); overrides: make train ARGS="optimizer.lr=0.1"
	$(BIN)/cnnlab-train $(ARGS)

eval: data  ## test a trained model on the full test split: make eval ARGS="run_dir=outputs/runs/<date>/<time>"
	$(BIN)/cnnlab-eval $(ARGS)

test: data  ## run the test suite (fast tests; `make test-all` adds the slow ones)
	$(BIN)/python -m pytest $(ARGS)

test-all: data install-optuna  ## run every test, slow and Optuna ones included
	$(BIN)/python -m pytest -m '' $(ARGS)

test-optuna: data install-optuna  ## the tests of the Optuna search (installs the optuna extra)
	$(BIN)/python -m pytest -m 'optuna and not slow' $(ARGS)

bench: data  ## throughput: course DataLoader loop vs cnnlab data path vs full runner (bench.json)
	$(BIN)/cnnlab-bench $(ARGS)

lint: install  ## ruff
	$(BIN)/ruff check src tests

tensorboard: install  ## compare runs: make tensorboard DIR=outputs/multirun/<date>/<time> [PORT=6007]
	$(BIN)/tensorboard --logdir $(DIR) $(if $(PORT),--port $(PORT))

clean:  ## remove run outputs and caches (keeps .venv and data)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache lightning_logs

##@ Answers (docs/ANSWERS.md)
ITEMS ?=
answers: data  ## run every item (ITEMS="a b": some) at this machine's scale, resumably, then write the sheet
	$(BIN)/cnnlab-answers run $(if $(SCALE),--scale $(SCALE)) $(ITEMS)

answers-sheet: install  ## write docs/ANSWERS.md from docs/results/ (no training)
	$(BIN)/cnnlab-answers sheet

# ---------------------------------------------------------------------------------------------
##@ Course exercises (EXERCISES.md). QUICK=1: the same item on a subset, minutes on a CPU
# Each training item runs `cnnlab-train -m experiment=<item> hydra.sweep.dir=<dir>` (sweeps sit in
# the experiment file's hydra.sweeper.params), then writes <dir>/report.md and curves.png
# (cnnlab-report) and points <item>/latest at <dir>. <dir> is $(EXERCISES_DIR)/<item>/<date>_<time>
# (-quick added with QUICK=1): a new one per call, so runs of different calls never mix.
# ARGS adds overrides to the training: make lenet-pool ARGS="seed=0,1,2" (3 seeds per variant).
EXERCISES_DIR ?= outputs/exercises
QUICK ?=
quick_on = $(filter 1 true yes,$(QUICK))
# SCALE=laptop: the 96-224 px items at their family's laptop protocol (LAPTOP_* below); the 28 px
# items have none and run their course recipe. Empty or SCALE=full: the course recipes.
SCALE ?=
laptop_on = $(filter laptop,$(SCALE))
ifneq ($(filter-out full laptop,$(SCALE)),)
$(error SCALE=$(SCALE): give SCALE=full (the course recipes) or SCALE=laptop (docs/ANSWERS.md))
endif
ifneq ($(and $(quick_on),$(laptop_on)),)
$(error QUICK=1 and SCALE=laptop both shrink the runs: give one of them)
endif
RUN_ID := $(shell date +%Y-%m-%d_%H-%M-%S)
comma := ,
exercise_dir = $(EXERCISES_DIR)/$@/$(RUN_ID)$(if $(quick_on),-quick)$(if $(laptop_on),-laptop)
# What QUICK=1 adds (EXERCISES.md, "Quick mode"), per family of runs: QUICK_<family>. 28 px
# nets: 30,000 training images (2,000 of them held out for validation), 2,000 test images, 3
# epochs: about 330 steps of batch 256, enough for the sigmoid LeNet to leave its initial
# plateau. The 96-224 px nets: 1,000 / 500 / 500 images, 1 epoch, at a smaller image size,
# logging every step (500 training images are 2-16 steps, fewer than the default interval of
# 50, which would leave TensorBoard without a training curve).
QUICK_28_DATA  ?= ++quick=true dataset.train_subset=30000 dataset.val_size=2000 dataset.test_subset=2000
QUICK_28       ?= $(QUICK_28_DATA) trainer.max_epochs=3
QUICK_LENET_EPOCHS ?= $(QUICK_28_DATA) trainer.max_epochs=1$(comma)3$(comma)6
QUICK_LENET_LONG ?= $(QUICK_28) trainer.max_epochs=6
QUICK_LENET_OPTUNA ?= $(QUICK_28) hydra.sweeper.n_trials=4
QUICK_BIG      ?= ++quick=true dataset.train_subset=1000 dataset.val_size=500 dataset.test_subset=500 trainer.max_epochs=1 trainer.log_every_n_steps=1
QUICK_ALEXNET  ?= $(QUICK_BIG) dataset.image_size=96
QUICK_ALEXNET_LONG ?= $(QUICK_ALEXNET) trainer.max_epochs=6
QUICK_ALEXNET28 ?= $(QUICK_BIG)
QUICK_VGG      ?= $(QUICK_BIG) dataset.image_size=32
QUICK_VGG_IMAGE_SIZE ?= $(QUICK_BIG) dataset.image_size=64$(comma)32
QUICK_GOOGLENET ?= $(QUICK_BIG) dataset.image_size=32
QUICK_RESNET   ?= $(QUICK_BIG) dataset.image_size=32
QUICK_RESNET_INCEPTION ?= $(QUICK_BIG)
QUICK_ALEXNET_SMALL ?= $(QUICK_ALEXNET)
# SCALE=laptop adds LAPTOP_<family> (docs/ANSWERS.md, "Laptop scale": how each protocol was
# chosen, and what it measured); a family without one (the 28 px nets) runs its course recipe.
# One protocol per family, the same for all variants of an item: smaller images, narrower nets
# (AlexNet, GoogLeNet, ResNet; the course's VGG-11 has narrow convs already, but at 32 px its
# 4096-wide FC layers are most of its FLOPs: 1024 here), fewer images or epochs.
LAPTOP_ALEXNET_DATA ?= laptop=true dataset.image_size=96 trainer.max_epochs=5
LAPTOP_ALEXNET ?= $(LAPTOP_ALEXNET_DATA) model.width_multiplier=0.5 model.fc_width=1024
LAPTOP_ALEXNET_LONG ?= $(LAPTOP_ALEXNET) trainer.max_epochs=15
# alexnet_small is the simplification under test: it keeps its own widths.
LAPTOP_ALEXNET_SMALL ?= $(LAPTOP_ALEXNET_DATA)
LAPTOP_ALEXNET28 ?= laptop=true trainer.max_epochs=5
LAPTOP_VGG     ?= laptop=true dataset.image_size=32 dataset.train_subset=20000 dataset.val_size=2000 \
	model.fc_width=1024
LAPTOP_VGG_IMAGE_SIZE ?= $(LAPTOP_VGG) dataset.image_size=64$(comma)32
LAPTOP_GOOGLENET ?= laptop=true dataset.image_size=48 model.width_ratio=4 trainer.max_epochs=4
LAPTOP_RESNET  ?= laptop=true dataset.image_size=32 model.width=16 trainer.max_epochs=5
LAPTOP_RESNET_INCEPTION ?= laptop=true model.width=16 trainer.max_epochs=5
scaled = $(if $(quick_on),$(QUICK_$(1)),$(if $(laptop_on),$(LAPTOP_$(1))))
# RESUME=1 (with a fixed RUN_ID): continue the item's sweeps instead of starting new ones;
# finished jobs are skipped (resume_sweep=true, docs/resume-and-sweeps.md). cnnlab-answers uses it.
RESUME ?=

# $(call sweep,<cnnlab-train arguments>,<family>[,<subdir of the exercise dir>])
# Every recipe line starts with s=0 and ends with $(report): a failed job (cnnlab-train exits 1)
# still gets its report, and make exits non-zero afterwards.
sweep_dir = $(exercise_dir)$(if $(1),/$(1))
sweep = $(BIN)/cnnlab-train -m $(1) $(call scaled,$(2)) hydra.sweep.dir=$(call sweep_dir,$(3)) \
	$(if $(RESUME),$$(test -f $(call sweep_dir,$(3))/multirun.yaml && echo resume_sweep=true)) \
	$(ARGS) || s=1;
report = $(BIN)/cnnlab-report $(exercise_dir) || s=1; \
	ln -sfn $(notdir $(exercise_dir)) $(EXERCISES_DIR)/$@/latest; exit $$s
# $(call analyze,<cnnlab-analyze arguments>): analysis.md in the exercise dir (nothing trained).
analyze = $(BIN)/cnnlab-analyze $(1) hydra.run.dir=$(exercise_dir) $(ARGS) \
	&& ln -sfn $(notdir $(exercise_dir)) $(EXERCISES_DIR)/$@/latest

EXERCISES := lenet lenet-pool lenet-kernel lenet-channels lenet-activation lenet-conv-layers \
	lenet-fc-layers lenet-lr lenet-init lenet-epochs lenet-improved lenet-optuna lenet-mnist \
	lenet-activations alexnet alexnet-epochs alexnet-small alexnet-batch-size alexnet-analysis \
	lenet-dropout-relu lenet-preprocessing vgg11 vgg-layers vgg-vs-alexnet vgg-image-size \
	vgg-depth googlenet googlenet-variants googlenet-min-size googlenet-params resnet18 \
	resnet-depth resnet-bottleneck resnet-preact resnet-inception resnet-plain vanishing-gradient alexnet-lrn lenet-local \
	lenet-optimizers course-recipes
.PHONY: $(EXERCISES)

##@ LeNet (28 px: every item trains on a CPU)
lenet: data  ## LeNet: the course recipe (sigmoid, avg-pool, SGD lr 0.9, batch 256, 10 epochs)
	s=0; $(call sweep,experiment=lenet,28) $(report)

lenet-pool: data  ## LeNet I: average vs max pooling
	s=0; $(call sweep,experiment=lenet_pool,28) $(report)

lenet-kernel: data  ## LeNet II: convolution window 3x3 / 5x5 / 7x7
	s=0; $(call sweep,experiment=lenet_kernel,28) $(report)

lenet-channels: data  ## LeNet II: output channels of the conv layers (3,8 .. 32,64)
	s=0; $(call sweep,experiment=lenet_channels,28) $(report)

lenet-activation: data  ## LeNet II: sigmoid vs tanh vs ReLU (and ReLU at lr 0.1, where it trains)
	s=0; $(call sweep,experiment=lenet_activation,28) \
	$(call sweep,experiment=lenet_activation model.activation=relu optimizer.lr=0.1,28,relu-lr0.1) \
	$(report)

lenet-conv-layers: data  ## LeNet II: one, two or three conv layers
	s=0; $(call sweep,experiment=lenet_conv_layers,28) $(report)

lenet-fc-layers: data  ## LeNet II: zero to three hidden FC layers
	s=0; $(call sweep,experiment=lenet_fc_layers,28) $(report)

lenet-lr: data  ## LeNet II: learning rate 0.1 / 0.3 / 0.9 / 2.0
	s=0; $(call sweep,experiment=lenet_lr,28) $(report)

lenet-init: data  ## LeNet II: Xavier vs Kaiming vs PyTorch-default initialisation
	s=0; $(call sweep,experiment=lenet_init,28) $(report)

lenet-epochs: data  ## LeNet II: 5 / 10 / 20 epochs (QUICK=1: 1 / 3 / 6 on the subset)
	s=0; $(call sweep,experiment=lenet_epochs,LENET_EPOCHS) \
	$(report)

lenet-improved: data  ## LeNet II: the lenet_improved preset (goal: test acc >= 0.91, 10 epochs)
	s=0; $(call sweep,experiment=lenet_improved,28) $(report)

lenet-optuna: data install-optuna  ## LeNet II: Optuna search of lr and conv widths (20 trials; QUICK=1: 4)
	s=0; $(call sweep,experiment=lenet_improved hparams_search=lenet_optuna,LENET_OPTUNA) $(report)

lenet-mnist: data  ## LeNet III: lenet_improved on MNIST (goal: test acc >= 0.99)
	s=0; $(call sweep,experiment=lenet_improved_mnist,28) $(report)

lenet-activations: data  ## LeNet IV: first/second-layer activations, sweaters vs coats
	s=0; $(call sweep,experiment=lenet,28) \
	$(BIN)/cnnlab-visualize run_dir=$(exercise_dir)/0 'classes=[Pullover,Coat]' \
	  hydra.run.dir=$(exercise_dir)/visualize || s=1; $(report)

##@ AlexNet (224 px: the full recipes need a GPU)
alexnet: data  ## AlexNet: the course recipe (224 px, SGD lr 0.01, batch 128, 10 epochs)
	s=0; $(call sweep,experiment=alexnet,ALEXNET) $(report)

alexnet-epochs: data  ## AlexNet I: AlexNet and LeNet trained 30 epochs (QUICK=1: 6)
	s=0; $(call sweep,experiment=alexnet_long,ALEXNET_LONG,alexnet) \
	$(call sweep,experiment=lenet_long,LENET_LONG,lenet) $(report)

alexnet-small: data  ## AlexNet II: a simplified AlexNet, and an AlexNet designed for 28x28
	s=0; $(call sweep,experiment=alexnet_small model=alexnet,ALEXNET,alexnet) \
	$(call sweep,experiment=alexnet_small model=alexnet_small,ALEXNET_SMALL,alexnet_small) \
	$(call sweep,experiment=alexnet28,ALEXNET28,alexnet28) $(report)

alexnet-batch-size: data  ## AlexNet III: batch size 32 .. 256: accuracy and peak memory
	s=0; $(call sweep,experiment=alexnet_batch_size,ALEXNET) $(report)

alexnet-analysis: install  ## AlexNet IV: memory footprint, FLOPs per layer, bandwidth (analyze)
	$(call analyze,experiment=alexnet)

lenet-dropout-relu: data  ## AlexNet V: dropout and ReLU in LeNet-5 (ReLU also at lr 0.1, where it trains)
	s=0; $(call sweep,experiment=lenet_dropout_relu,28) \
	$(call sweep,experiment=lenet_dropout_relu 'ablation=[relu]$(comma)[relu$(comma)dropout]' \
	  optimizer.lr=0.1,28,relu-lr0.1) $(report)

lenet-preprocessing: data  ## AlexNet V: normalisation and augmentation, on LeNet-5
	s=0; $(call sweep,experiment=lenet_preprocessing,28) $(report)

##@ VGG (224 px: the full recipes need a GPU)
vgg11: data  ## VGG: the VGG-11 course recipe (widths / 4, 224 px, SGD lr 0.05, batch 128)
	s=0; $(call sweep,experiment=vgg11,VGG) $(report)

vgg-layers: install  ## VGG I: output shape per block and per layer (analyze)
	$(call analyze,experiment=vgg11)

vgg-vs-alexnet: install  ## VGG II: compute and memory of VGG-11 vs AlexNet (analyze)
	$(call analyze,'models=[alexnet$(comma)vgg11$(comma)vgg11_narrow]' dataset.image_size=224)

vgg-image-size: data  ## VGG III: 224 vs 96 px input (QUICK=1: 64 vs 32 px)
	s=0; $(call sweep,experiment=vgg_image_size,VGG_IMAGE_SIZE) \
	$(report)

vgg-depth: data  ## VGG IV: VGG-11 vs VGG-16 vs VGG-19 (and VGG-19 with batch norm)
	s=0; $(call sweep,experiment=vgg_depth,VGG) \
	$(call sweep,experiment=vgg_depth model.arch=vgg19 model.batch_norm=true,VGG,bn) $(report)

##@ GoogLeNet (96 px: the full recipes need a GPU)
googlenet: data  ## GoogLeNet: the course recipe (96 px, SGD lr 0.1, batch 128, 10 epochs)
	s=0; $(call sweep,experiment=googlenet,GOOGLENET) $(report)

googlenet-variants: data  ## GoogLeNet I: BN, Inception-v3 changes, label smoothing, Inc.-ResNet
	s=0; $(call sweep,experiment=googlenet_variants,GOOGLENET) $(report)

googlenet-min-size: install  ## GoogLeNet II: the smallest input image size (analyze)
	$(call analyze,experiment=googlenet min_size=true)

googlenet-params: install  ## GoogLeNet III: parameters and FLOPs vs AlexNet and VGG (analyze)
	$(call analyze,'models=[googlenet$(comma)alexnet$(comma)vgg11$(comma)vgg11_narrow]' \
	  dataset.image_size=224)

##@ ResNet (96 px: the full recipes need a GPU)
resnet18: data  ## ResNet: the ResNet-18 course recipe (96 px, SGD lr 0.05, batch 256, 10 epochs)
	s=0; $(call sweep,experiment=resnet18,RESNET) $(report)

resnet-depth: data  ## ResNet II: ResNet-18/34/50/101/152 (the paper's Table 1)
	s=0; $(call sweep,experiment=resnet_depth,RESNET) $(report)

resnet-bottleneck: data  ## ResNet III: bottleneck vs basic residual blocks
	s=0; $(call sweep,experiment=resnet_bottleneck,RESNET) $(report)

resnet-preact: data  ## ResNet IV: pre-activation vs post-activation blocks
	s=0; $(call sweep,experiment=resnet_preact,RESNET) $(report)

resnet-inception: data  ## ResNet I: Inception block -> one path -> one path + identity (the residual block)
	s=0; $(call sweep,experiment=resnet_inception,RESNET_INCEPTION) \
	$(BIN)/python -m cnnlab.analysis.inception_residual $(exercise_dir) || s=1; $(report)

resnet-plain: data  ## ResNet V: plain-18/34 (no shortcuts) vs ResNet-18/34, training loss curves
	s=0; $(call sweep,experiment=resnet_plain,RESNET) $(report)

##@ GPU
COURSE_RECIPES ?= lenet$(comma)alexnet$(comma)vgg11$(comma)googlenet$(comma)resnet18
course-recipes: data  ## the five course recipes, 10 epochs each, on one GPU (trainer=gpu, CUDA graphs; docs/performance.md)
	s=0; $(call sweep,experiment=$(COURSE_RECIPES) trainer=gpu cuda_graphs=true,BIG) $(report)

##@ Lecture extras
vanishing-gradient: data  ## Extra: sigmoid vs ReLU, gradient norm per layer
	s=0; $(call sweep,experiment=vanishing_gradient,28) $(report)

alexnet-lrn: data  ## Extra: LRN none / inter-channel / intra-channel in AlexNet
	s=0; $(call sweep,experiment=alexnet_lrn,ALEXNET) $(report)

lenet-local: data  ## Extra: locally connected vs convolutional first layer (and both with ReLU at lr 0.1)
	s=0; $(call sweep,experiment=lenet_local,28) \
	$(call sweep,experiment=lenet_local model.activation=relu optimizer.lr=0.1,28,relu-lr0.1) \
	$(report)

lenet-optimizers: data  ## Extra: SGD, momentum, Adagrad, RMSProp, Adam, L-BFGS on LeNet-5 (and SGD at the recipe's lr)
	s=0; $(call sweep,experiment=lenet_optimizers,28) \
	$(call sweep,experiment=lenet_optimizers optimizer=sgd optimizer.lr=0.9,28,sgd-lr0.9) $(report)
