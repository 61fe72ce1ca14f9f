"""Measurements that answer the exercise questions (sizes, parameters, FLOPs, memory)."""
