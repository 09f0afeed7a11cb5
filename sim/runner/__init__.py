"""Running scenarios: the SimPy model (``simulation``), one scenario end to end (``pipeline``), the executor that
fans runs out to processes or Dask (``executor``), and the pre-run estimate (``estimate``).
"""
