"""Extra model kinds. Each module registers itself with
:func:`grokking_llc.core.model.register_model`;
``build_model(kind, ...)`` imports ``grokking_llc.core.architectures.<kind>`` on first use."""
