"""Storage: engine, schema, migrations and the one transaction boundary."""
