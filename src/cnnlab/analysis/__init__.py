"""Measurements that answer the exercise questions (sizes, parameters, FLOPs, memory), and what
the trained models are looked at with (attribution maps, accuracy per class, confusion matrices)."""
