"""API tokens are stored as their digest from now on: hash the ones issued before.

Their holders keep using them (the token presented is hashed the same way). Not
reversible: the tokens themselves are not kept.
"""

import hashlib

from django.db import migrations


def hash_tokens(apps, schema_editor):
    Token = apps.get_model("authtoken", "Token")
    for key in list(Token.objects.values_list("key", flat=True)):
        Token.objects.filter(key=key).update(key=hashlib.sha256(key.encode()).hexdigest()[:40])


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_facility_billing"),
        ("authtoken", "0004_alter_tokenproxy_options"),
    ]

    operations = [migrations.RunPython(hash_tokens)]
