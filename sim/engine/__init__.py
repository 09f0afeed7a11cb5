"""Node engines: ``Node`` (fast, jumps over unchanged decode steps) and ``ReferenceNode`` (step by step)."""

from .common import NodeSnapshot, admission_problem
from .node import Node
from .reference import ReferenceNode

__all__ = ["Node", "NodeSnapshot", "ReferenceNode", "admission_problem"]
