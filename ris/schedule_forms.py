"""Forms of the front-desk schedule pages: what a clerk typed, checked before any service
is called, so bad input is a clear message and never a 500."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from ris.models import Room

MAX_SEARCH_DAYS = 31


class RoomField(forms.ModelChoiceField):
    """One of the offered rooms; anything else (unknown, another facility's, not a number)
    gets the same clear message, which does not reveal whether a foreign room exists."""

    default_error_messages = {
        "invalid_choice": "Choose one of the rooms offered; that one is not among them."
    }

    def label_from_instance(self, obj: Room) -> str:
        return f"{obj.name} ({obj.modality})"


class SlotSearchForm(forms.Form):
    """The date range (and room) to look for free slots in; today to today + 6 by default."""

    first = forms.DateField(label="From")
    last = forms.DateField(label="To")
    room = forms.ModelChoiceField(queryset=Room.objects.none(), required=False, label="Room")

    def __init__(self, data: Any, *, rooms: QuerySet[Room]) -> None:
        today = timezone.localdate()
        defaults = {"first": today.isoformat(), "last": (today + dt.timedelta(days=6)).isoformat()}
        merged = {**defaults, **{k: v for k, v in data.items() if k in self.base_fields and v}}
        super().__init__(merged)
        self.fields["room"] = RoomField(rooms, required=False, empty_label="Any room")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        first, last = data.get("first"), data.get("last")
        if first and last:
            if last < first:
                raise forms.ValidationError("The end of the range is before its start.")
            if (last - first).days >= MAX_SEARCH_DAYS:
                raise forms.ValidationError(f"Search at most {MAX_SEARCH_DAYS} days at a time.")
        return data


class SlotForm(forms.Form):
    """Where and when to book: a suggested slot (`slot` = "<room id>@<ISO start>", one
    button each) or a room, a day and a time typed by the clerk."""

    slot = forms.CharField(required=False, widget=forms.HiddenInput)
    room = forms.ModelChoiceField(queryset=Room.objects.none(), required=False)
    day = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    time = forms.TimeField(required=False, widget=forms.TimeInput(attrs={"type": "time"}))
    reason = forms.CharField(required=False, max_length=150)

    def __init__(self, *args: Any, rooms: QuerySet[Room], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rooms = rooms
        self.fields["room"] = RoomField(rooms, required=False, empty_label="Choose a room")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("slot"):
            room_id, _, starts = data["slot"].partition("@")
            try:
                starts_at = dt.datetime.fromisoformat(starts)
                room = self.rooms.get(pk=int(room_id))
            except (ValueError, Room.DoesNotExist):
                raise forms.ValidationError(
                    "That suggestion is not valid any more; choose another."
                ) from None
        else:
            room = data.get("room")
            day, time = data.get("day"), data.get("time")
            missing = [
                name for name, value in (("room", room), ("day", day), ("time", time)) if not value
            ]
            if self.errors:
                return data
            if missing:
                raise forms.ValidationError(f"Choose a {' and a '.join(missing)}.")
            starts_at = dt.datetime.combine(day, time)
        if timezone.is_naive(starts_at):
            starts_at = timezone.make_aware(starts_at)
        data["room"], data["starts_at"] = room, starts_at
        return data


class CancelForm(forms.Form):
    reason = forms.CharField(
        max_length=200,
        error_messages={"required": "Give a reason for the cancellation."},
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    cancel_exam = forms.BooleanField(
        required=False, label="Cancel the exam too (it is no longer wanted)"
    )


class WalkInForm(forms.Form):
    room = forms.ModelChoiceField(queryset=Room.objects.none(), required=False)

    def __init__(self, *args: Any, rooms: QuerySet[Room], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["room"] = RoomField(rooms, required=False, empty_label="First free room")
