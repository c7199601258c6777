"""Sessions written out: JSON snapshots (and their import checks) and self-contained HTML pages."""
