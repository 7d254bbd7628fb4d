"""report"""

# experiment reports (sgdlab.report.html / compare build on this)
from .tables import Table, mean_std  # noqa: E402,F401
