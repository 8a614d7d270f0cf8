"""No two live appointments of a room overlap: a PostgreSQL exclusion constraint.

SQLite (the embedded development database) has no such constraint; there the booking
service's room lock is the guard, as it is the first one on PostgreSQL too.
"""

from django.db import migrations

CONSTRAINT = "appointment_no_double_booking"


def add_constraint(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    schema_editor.execute(
        f"ALTER TABLE ris_appointment ADD CONSTRAINT {CONSTRAINT} EXCLUDE USING gist "
        "(room_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) WHERE (NOT is_cancelled)"
    )


def drop_constraint(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE ris_appointment DROP CONSTRAINT IF EXISTS {CONSTRAINT}")


class Migration(migrations.Migration):
    dependencies = [("ris", "0005_performed_procedure_step")]

    operations = [migrations.RunPython(add_constraint, drop_constraint)]
