"""Resends are found by a unique copy key on insert, no longer by a locked lookup: the
messages stored before get their key, the first copy of each message only."""

from django.db import migrations, models

BATCH = 2000


def key_first_copies(apps, schema_editor) -> None:
    from ris.hl7.services import copy_key

    InboundMessage = apps.get_model("hl7", "InboundMessage")
    # Those the lookup used to find: not rejected, not a duplicate, with a control id.
    candidates = (
        InboundMessage.objects.filter(duplicate_of__isnull=True)
        .exclude(status="rejected")
        .exclude(control_id="")
        .order_by("id")
        .values_list("id", "sending_application", "sending_facility", "control_id", "text")
    )
    seen: set[bytes] = set()
    keyed: list = []
    for pk, application, facility, control_id, text in candidates.iterator(chunk_size=BATCH):
        key = copy_key(application, facility, control_id, text)
        if key in seen:  # a later copy the lookup would not have picked
            continue
        seen.add(key)
        keyed.append(InboundMessage(pk=pk, copy_key=key))
        if len(keyed) >= BATCH:
            InboundMessage.objects.bulk_update(keyed, ["copy_key"])
            keyed = []
    if keyed:
        InboundMessage.objects.bulk_update(keyed, ["copy_key"])


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_hash_api_tokens"),
        ("hl7", "0002_partner_posts_charges"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="inboundmessage",
            name="hl7_in_control_id",
        ),
        migrations.AddField(
            model_name="inboundmessage",
            name="copy_key",
            field=models.BinaryField(
                help_text="SHA-256 of sender, control id and content but MSH-7.",
                max_length=32,
                null=True,
            ),
        ),
        migrations.AddIndex(
            model_name="inboundmessage",
            index=models.Index(fields=["control_id"], name="hl7_in_control_id"),
        ),
        migrations.RunPython(key_first_copies, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="inboundmessage",
            constraint=models.UniqueConstraint(fields=("copy_key",), name="hl7_in_copy_key"),
        ),
    ]
