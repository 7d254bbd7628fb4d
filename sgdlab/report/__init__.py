"""report"""

# experiment reports (sgdlab.report.html / compare build on this)
from .tables import Table, mean_std

__all__ = ["Table", "mean_std"]
