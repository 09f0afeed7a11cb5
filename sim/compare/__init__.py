"""``capsim compare``: spill strategies (and fleet sizes) side by side on one traffic shape.
"""
