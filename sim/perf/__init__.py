"""The performance model of one serving node: hardware/model catalogue, memory plan and step time (``model``),
what a node sustains (``capacity``), benchmark-style runs (``benchmark``), calibration and validation against
published measurements.
"""
