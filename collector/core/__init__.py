"""The core every other part of siemhub may import, and which imports none of them.

- `event`: the canonical event model (msgspec structs), its JSON encoding and vocabularies.
- `settings`: the config building blocks: the `Strict` base model (unknown keys rejected), shared
  validators (CIDRs, ports, powers of two) and settings several plugins share (`PendingConfig`).
- `yamlpos`: YAML with positions: parse a file, keep the line of every key, and turn validation
  errors into `file:line: field: reason` (ConfigError).
- `secrets`: `${ENV}`, `${ENV:-default}` and `${file:PATH}` references in config values.
- `kafka`: Kafka connection settings shared by the Kafka exporter and the aggregator's Kafka source.
- `registry`: plugins (sensors, exporters) found by name through entry points.
- `kernel_settings`: what the policy engine hands the sensors (watch paths, in-kernel ignore lists,
  enforcement entries), through each sensor's own hook.

Layers: core <- plugins (sensors, exporters, formats, sources, kernel plumbing) <- agent and CLI.
tests/unit/test_layers.py enforces the direction.
"""
