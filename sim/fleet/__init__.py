"""The fleet: node slots and their life cycle and billing (``fleet``), routers, and autoscaling policies.
"""
