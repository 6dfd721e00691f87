"""Adapter implementations, one module per kind; `core.adapter_types` names them."""
