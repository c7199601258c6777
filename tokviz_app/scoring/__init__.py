"""`tokviz score`: a corpus scorer on the command line (cli.py), through the same engine as the page.

align.py, windows.py, rows.py, words.py and output.py are pure Python; corpus.py runs the model.
"""
