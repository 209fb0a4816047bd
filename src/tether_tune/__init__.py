"""tether-tune: turn FunctionGemma into a fast, accurate, private caller of CodeTether's tools."""

__version__ = "0.1.0"
