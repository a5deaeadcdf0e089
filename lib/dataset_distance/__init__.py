"""OTDD, the label-aware Optimal Transport Dataset Distance: per-dataset statistics, label
tables, the pairwise ground cost and the public API."""

from .api import OTDDMatrix, otdd, otdd_from_stats, otdd_matrix
from .cost import OTDDCost, label_costs
from .labels import LabelTable
from .stats import DatasetStats, dataset_stats

__all__ = [
    "DatasetStats",
    "LabelTable",
    "OTDDCost",
    "OTDDMatrix",
    "dataset_stats",
    "label_costs",
    "otdd",
    "otdd_from_stats",
    "otdd_matrix",
]
