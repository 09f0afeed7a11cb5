"""Infrastructure every layer uses: the scenario schema (``config``), one-line user errors, data paths, seeded
random streams, atomic files and result folders, progress, and the result-cache fingerprint.
"""
