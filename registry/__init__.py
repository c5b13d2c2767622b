"""idnode write path and system of record: names, schema, migrations and stores."""
