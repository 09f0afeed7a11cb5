"""From simulated requests to numbers: tidy tables and ``summary.json`` (``tables``), the dotted-name accessor
(``access``), SLO verdict, overload, headline statements, cost, energy, streaming metrics for long runs, and
replication statistics.
"""
