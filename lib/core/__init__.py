"""OT numerics: arrays, results, ground costs, exact LP, Sinkhorn, partitions, the mini-batch
bounds, the dispatcher, Gaussian closed forms and sliced screening.

Depends on numpy, scipy, torch and POT only (``tests/test_layout.py`` enforces it).
"""
