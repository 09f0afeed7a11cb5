"""``capsim size``: per-node goodput, the smallest fleet that meets the SLO, and the guide's sizing rules.
"""
