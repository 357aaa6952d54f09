"""Channel adapters: one module per channel (see base.py for the contract)."""
