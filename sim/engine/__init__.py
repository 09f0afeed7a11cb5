"""Node engines: ``Node`` (fast, jumps over unchanged decode steps) and ``ReferenceNode`` (step by step).

Both satisfy :class:`NodeEngine`, the only view of a node the rest of the simulator has; mypy checks it below.
"""

from typing import TYPE_CHECKING

from sim.engine.common import NodeSnapshot, admission_problem
from sim.engine.kv import BlockLedger, cdiv
from sim.engine.node import Node
from sim.engine.protocol import IndexedNodeEngine, NodeEngine
from sim.engine.reference import ReferenceNode

if TYPE_CHECKING:  # static conformance checks: each engine is a NodeEngine, the fast one an indexed one
    _fast: type[IndexedNodeEngine] = Node
    _reference: type[NodeEngine] = ReferenceNode

__all__ = ["BlockLedger", "IndexedNodeEngine", "Node", "NodeEngine", "NodeSnapshot", "ReferenceNode",
           "admission_problem", "cdiv"]
