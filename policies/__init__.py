"""The shipped policy library: one YAML policy per file (docs/policies.md)."""
