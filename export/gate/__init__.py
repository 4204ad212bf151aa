"""The quality gate: generate samples from the *exported ONNX graphs through the bundle loader and
the shared sampling rules* (exactly as the server runs them), quantise them to the 8-bit pixels the
server delivers (``gancore.images.to_uint8``, the PNG encoder's own step), score them with the
evaluation package against reference statistics, and write ``gate.json`` and a readable report
(``gate.md`` + sample grids) — for the raw generator and with each quality filter on, so the
filters' effect is measured, not assumed.

The verdict is the raw generator's and needs every rule of :class:`GateRules`: distance ≤ K × the
real-vs-real floor (or ≤ an absolute ``max_fd``), precision ≥ P, recall ≥ R and, for conditional
models, conditional accuracy ≥ A and the minimum per-class recall ≥ C. Each failing rule is named.

Cost: one pass over the candidate seeds generates each image once, runs D on it once (for the
filters) and extracts its features once; the raw, top-k and DRS figures are selections of that
pool. The filters are scored on N/2 selected images, so that top-k's 2 × N/2 candidates are the raw
N and DRS needs only a few hundred more: the filters add about 10% to the raw cost. The filters do not
enter the verdict.

The package: the rules (the thresholds and the verdict) live in :mod:`gancore.gate_rules`, ``pool`` (the candidate pool and the
filters' selections), ``report`` (gate.md and the grids), ``run`` (``run_gate``, ``preflight``).
"""

from export.gate.run import DEFAULT_N, preflight, run_gate
from gancore.gate_rules import GateRules, evaluate_rules

__all__ = ["DEFAULT_N", "GateRules", "evaluate_rules", "preflight", "run_gate"]
