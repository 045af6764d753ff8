"""Model sources (embedded, random, local folder, HF hub id) and the loader that turns a spec into a model.

Submodules import torch lazily where they can, so `pytest --help` stays fast.
"""
