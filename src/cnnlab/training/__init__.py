"""The one training loop (LitClassifier), what it is built from, the Trainer it runs in, and its
speed paths (CUDA graphs, compile, allocator, profiler)."""
