"""From simulated requests to numbers: tidy tables and the run summary (``tables``), its typed records with
``to_json``/``from_json`` (``summary``), the dotted-name accessor (``access``), SLO verdict, overload, headline
statements, cost, energy, streaming metrics for long runs, and replication statistics.
"""
