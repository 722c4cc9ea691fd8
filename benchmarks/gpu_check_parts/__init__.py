"""The parts of benchmarks/gpu_check.py, one module each, and what they share.

This file imports nothing: benchmarks/gpu_check.py installs the import blocker (blocker.py)
before any other module is loaded, and importing this package must not load one first.
"""
