"""Thin entry points, one module per console script: train, analyze, visualize, report, bench."""
