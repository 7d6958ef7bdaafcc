# A data migration that fails, as a bad one does in production: it runs after 0002 and raises. On PostgreSQL each
# migration runs in its own transaction: nothing of 0003 stays, and 0002 (applied by an earlier deploy) is untouched.
from django.db import migrations

from shop.release import RELEASE


def fill_notes(apps, schema_editor):
    raise RuntimeError(f'release {RELEASE}: migration 0003_fill_notes fails on purpose')


class Migration(migrations.Migration):

    dependencies = [
        ('items', '0002_item_note'),
    ]

    operations = [
        migrations.RunPython(fill_notes, migrations.RunPython.noop),
    ]
