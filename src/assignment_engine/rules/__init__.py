"""The rule file: YAML with positions, its models and JSON Schema, the criteria grammar, input mappings, compiling."""
