"""Reports of safemix runs: summary.csv, report.md and a self-contained report.html with plots.

``write_report(run_dirs, out_dir)`` is the entry point; other stages add sections through
``safemix.report.write.SECTION_PROVIDERS``. Matplotlib is imported only when plots are drawn.
"""

from safemix.report.sections import Figure, Section, Table
from safemix.report.write import write_report

__all__ = ["Figure", "Section", "Table", "write_report"]
