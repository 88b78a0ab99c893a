"""Reports: results.json as terminal and markdown tables, learning curves, tree pictures, the method catalog."""

from distill.report.tables import headers, markdown_table, print_table, table_rows, write_report

__all__ = ["headers", "markdown_table", "print_table", "table_rows", "write_report"]
