"""The scheduler package has no import cycle, counting imports made only for type checking."""

from __future__ import annotations

import grimp


def test_scheduler_modules_import_each_other_without_cycles():
    graph = grimp.build_graph("controlplane")
    modules = sorted(m for m in graph.modules if m.startswith("controlplane.scheduler"))
    cycles = [(a, b) for a in modules for b in sorted(graph.find_modules_directly_imported_by(a))
              if b.startswith("controlplane.scheduler") and b != a
              and graph.chain_exists(importer=b, imported=a)]
    assert cycles == []
