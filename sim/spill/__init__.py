"""Spill: per-request policies that keep a request on the fleet or send it to the hosted API (``policy``), the
API provider model (``api``), and the deferrable batch queue (``deferred``).
"""
