"""The only code that touches the database: tables, migrations, and state transitions."""
