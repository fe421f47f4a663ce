"""The ACMIL paper's analyses as commands and functions.

- ``acmil heatmap`` (:func:`heatmaps`): attention heatmap PNGs per slide, mean and per branch, with the
  service's renderer, over a slide thumbnail when the slide is at hand;
- ``acmil umap`` (:func:`umap_analysis`): UMAP of the model's hidden instance features, coloured by
  attention, by the most attending branch and by a ground-truth tile label;
- ``acmil attention-stats`` (:func:`attention_stats`): cumulative attention of the top-K tiles, per branch,
  comparing checkpoints;
- ``acmil localisation`` (:func:`localisation`): tile-level AUC of attention against tumour masks.

Heavy libraries (umap-learn, matplotlib, scikit-learn) are imported inside the functions that use them.
"""

from .attention_stats import attention_stats, cumulative_curve, topk_cumulative
from .heatmaps import heatmaps
from .localisation import localisation, tile_auc
from .masks import tile_fractions, tile_labels
from .umap_plot import umap_analysis

__all__ = [
    "attention_stats",
    "cumulative_curve",
    "heatmaps",
    "localisation",
    "tile_auc",
    "tile_fractions",
    "tile_labels",
    "topk_cumulative",
    "umap_analysis",
]
