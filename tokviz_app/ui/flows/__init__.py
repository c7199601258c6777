"""A tab's flows, one module per concern; each reads and writes the tab's state and goes through its guard."""
