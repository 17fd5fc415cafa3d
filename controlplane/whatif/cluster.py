"""Simulated clusters of any size with the node mix of the workload's own cluster.

The node list is interleaved so that every prefix keeps the mix: the nodes of each kind
(CPU, memory, GPUs, model) get evenly spaced positions ``(i + 0.5) / count`` and all nodes
are sorted by position. A cluster of size k is the first k nodes (beyond the list, it starts
over with copies), so a larger cluster always contains a smaller one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from controlplane.core.resources import Accelerator, Node
from controlplane.whatif.partitions import LAYOUTS, PROFILES, assign_layouts
from controlplane.whatif.workload import NodeRow


def interleave(rows: Sequence[NodeRow]) -> list[NodeRow]:
    """The nodes in an order whose every prefix keeps the mix of kinds (see module doc)."""
    kinds: dict[tuple, list[NodeRow]] = {}
    for r in rows:
        kinds.setdefault((r.cpu_milli, r.memory_mib, r.gpus, r.model, r.gpu_memory_mib), []).append(r)
    keyed = []
    for rank, (kind, members) in enumerate(sorted(kinds.items(), key=lambda kv: -len(kv[1]))):
        keyed += [((i + 0.5) / len(members), rank, r) for i, r in enumerate(members)]
    return [r for _, _, r in sorted(keyed, key=lambda x: (x[0], x[1]))]


@dataclass
class Cluster:
    """Fresh Nodes for one replay, and per accelerator the share of a physical GPU it is."""

    nodes: list[Node]
    gpus: int  # physical GPUs
    gpu_memory_mib: int  # physical GPU memory, all cards
    share: dict[str, float] = field(default_factory=dict)  # uuid -> share of its GPU (MIG)

    def by_uuid(self) -> dict[str, Accelerator]:
        return {a.uuid: a for n in self.nodes for a in n.accelerators}


class ClusterTemplate:
    """Clusters of the first k nodes of the interleaved node list, plain or partitioned."""

    def __init__(self, rows: Sequence[NodeRow]):
        self.order = interleave(rows)
        self.cards: dict[str, int] = {}
        for r in rows:
            self.cards[r.model] = min(self.cards.get(r.model, r.gpu_memory_mib), r.gpu_memory_mib)

    def rows(self, k: int) -> list[NodeRow]:
        n = len(self.order)
        out = []
        for i in range(k):
            r = self.order[i % n]
            name = r.name if i < n else f"{r.name}~{i // n + 1}"
            out.append(NodeRow(name, r.cpu_milli, r.memory_mib, r.gpus, r.model, r.gpu_memory_mib))
        return out

    def nodes_for_gpus(self, gpus: float) -> int:
        """The smallest k whose first k nodes hold at least ``gpus`` GPUs (at least 1)."""
        k, total = 0, 0
        n = len(self.order)
        while total < gpus or k == 0:
            total += self.order[k % n].gpus
            k += 1
        return k

    def build(self, k: int, layout_shares: dict[str, float] | None = None,
              whole_node_gpus: int = 1) -> Cluster:
        """A fresh cluster of the first k nodes; with ``layout_shares`` its GPUs are split into
        MIG-like instances (accelerators named ``MODEL/Ng``), whole nodes only where at least
        ``whole_node_gpus`` GPUs."""
        rows = self.rows(k)
        layouts = (assign_layouts([r.gpus for r in rows], layout_shares, whole_node_gpus)
                   if layout_shares else [[None] * r.gpus for r in rows])
        nodes, share = [], {}
        for r, node_layouts in zip(rows, layouts):
            accs = []
            for j, layout in enumerate(node_layouts):
                if layout is None:
                    accs.append(Accelerator(f"{r.name}-gpu{j}", r.name, len(accs), model=r.model,
                                            memory_mib=r.gpu_memory_mib))
                    continue
                for k_, g in enumerate(LAYOUTS[layout]):
                    sevenths, eighths = PROFILES[g]
                    uuid = f"{r.name}-gpu{j}-{k_}"
                    accs.append(Accelerator(uuid, r.name, len(accs), model=f"{r.model}/{g}g",
                                            memory_mib=r.gpu_memory_mib * eighths // 8))
                    share[uuid] = sevenths / 7
            nodes.append(Node(r.name, r.cpu_milli, r.memory_mib, accs))
        return Cluster(nodes, sum(r.gpus for r in rows), sum(r.gpus * r.gpu_memory_mib for r in rows),
                       share)
