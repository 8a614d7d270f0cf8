"""Forms of the HL7 message log pages: the search filters and the replay selection.

They validate and clean input only; the views hand `cleaned_data` to the selectors and
the chosen messages to `services.message_replay`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.db.models import QuerySet

from ris.hl7.models import InboundMessage, OutboundMessage

DATE = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
# One POST replays at most this many (a page of the list holds 50).
MAX_REPLAY = 100


class DateRangeForm(forms.Form):
    since = forms.DateField(required=False, label="From", widget=DATE)
    until = forms.DateField(required=False, label="To", widget=DATE)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since: dt.date | None = data.get("since")
        until: dt.date | None = data.get("until")
        if since and until and until < since:
            self.add_error("until", "The end of the range comes after its start.")
        return data


class InboundFilterForm(DateRangeForm):
    """The message log's search; every field optional, all of them combined."""

    status = forms.ChoiceField(
        required=False, choices=[("", "any"), *InboundMessage.Status.choices]
    )
    message_type = forms.CharField(
        required=False,
        max_length=16,
        label="Type",
        widget=forms.TextInput(attrs={"placeholder": "ADT or ADT^A08"}),
    )
    control_id = forms.CharField(required=False, max_length=199, label="Control id (MSH-10)")
    patient = forms.CharField(
        required=False,
        max_length=100,
        label="Patient (MRN or name)",
        widget=forms.TextInput(attrs={"type": "search"}),
    )
    order_number = forms.CharField(required=False, max_length=100, label="Placer order number")
    sending_application = forms.CharField(required=False, max_length=180, label="Sender (MSH-3)")

    field_order = [
        "status",
        "message_type",
        "control_id",
        "patient",
        "order_number",
        "sending_application",
        "since",
        "until",
    ]

    def filters(self) -> dict[str, Any]:
        """The valued filters (none when the form is invalid), as the selector takes them."""
        if not self.is_valid():
            return {}
        data = {
            key: value.strip() if isinstance(value, str) else value
            for key, value in self.cleaned_data.items()
        }
        status = data.pop("status", "")
        if status:
            data["statuses"] = [status]
        return {key: value for key, value in data.items() if value not in ("", None)}


class OutboundFilterForm(DateRangeForm):
    status = forms.ChoiceField(
        required=False, choices=[("", "any"), *OutboundMessage.Status.choices]
    )
    message_type = forms.CharField(
        required=False,
        max_length=16,
        label="Type",
        widget=forms.TextInput(attrs={"placeholder": "ORU or ORM^O01"}),
    )

    field_order = ["status", "message_type", "since", "until"]

    def filters(self) -> dict[str, Any]:
        if not self.is_valid():
            return {}
        data = dict(self.cleaned_data)
        status = data.pop("status", "")
        if status:
            data["statuses"] = [status]
        data["message_type"] = data.get("message_type", "").strip()
        return {key: value for key, value in data.items() if value not in ("", None)}


class ReplayForm(forms.Form):
    """Messages ticked on the list, among those the administrator may see."""

    ids = forms.ModelMultipleChoiceField(
        queryset=InboundMessage.objects.none(),
        error_messages={
            "required": "Tick the messages to replay first.",
            "invalid_choice": "A message ticked is not in your message log.",
            "invalid_pk_value": "A message ticked is not in your message log.",
        },
    )

    def __init__(self, *args: Any, messages: QuerySet[InboundMessage], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["ids"].queryset = messages

    def clean_ids(self) -> list[InboundMessage]:
        """The chosen messages in arrival order, the order they are replayed in."""
        chosen = sorted(self.cleaned_data["ids"], key=lambda message: message.pk)
        if len(chosen) > MAX_REPLAY:
            raise forms.ValidationError(f"Replay at most {MAX_REPLAY} messages at a time.")
        return chosen
