"""grokking-llc: grokking as a phase transition, measured with the local learning coefficient.

A reproducible workflow for "Grokking as a Phase Transition between Competing Basins: a Singular
Learning Theory Approach". The formulas cite sections of ``SPEC.md`` (kept with the paper).
"""

__version__ = "0.1.0"
