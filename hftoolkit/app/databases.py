"""The `data` verbs: files into a database table, a look at a table, rating logged answers, exporting them."""

from __future__ import annotations

from hftoolkit.data.db_import import import_files
from hftoolkit.db.generation_log import export_answers, rate
from hftoolkit.db.importer import show_table

__all__ = ["import_files", "show_table", "rate", "export_answers"]
