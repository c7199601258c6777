"""How tokens are shown: visible text, number formats, colour scales and their CSS.

Pure Python (no NiceGUI, no torch): the page (`ui/`) and the HTML export (`exports/`) both read from here,
so the two show the same strings and colours.
"""
