"""Model A/B: compare two indexes over the same gallery query by query and pair by pair (``simx diff``, the
dashboard's Compare page).

>>> from simx.index import open_index
>>> from simx.diff import compare_indexes, diff_report_html
>>> d = compare_indexes(open_index("shortcut"), open_index("shortcut-ft"), k=10)
>>> d.overall, d.worst(10), d.pairs
"""

from .core import (DiffError, IndexDiff, check_same_gallery, comparable_indexes, compare_indexes, exact_ranks, explain_both,
                   label_stores, neighbour_lists, pair_pictures)
from .html import delta_figure, diff_report_html, summary_rows

__all__ = ["compare_indexes", "IndexDiff", "DiffError", "check_same_gallery", "comparable_indexes", "exact_ranks", "neighbour_lists",
           "explain_both", "pair_pictures", "label_stores", "diff_report_html", "delta_figure", "summary_rows"]
