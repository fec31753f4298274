"""The store (opening, migrations, column rules, rollups, the journal)."""
