"""Forms of the room set-up pages: the room, its weekly hours, its closures.

They validate and clean input only; the views hand `cleaned_data` to the services.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.db.models import QuerySet
from django.forms import formset_factory

from accounts.models import Facility
from ris.models import Procedure, Room
from ris.services import WEEKDAY_NAMES, room_hours_problems

TIME = forms.TimeInput(attrs={"type": "time"}, format="%H:%M")
LOCAL_MINUTE = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


class ProcedureChoices(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Procedure) -> str:
        retired = "" if obj.is_active else " (no longer offered)"
        return f"{obj.modality} · {obj.code} {obj.name}{retired}"


class RoomForm(forms.ModelForm):
    """A room's own fields and the procedures it performs."""

    procedures = ProcedureChoices(
        queryset=Procedure.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Procedures performed here",
        help_text="A procedure ticked in no room is done in every room of its modality.",
    )

    class Meta:
        model = Room
        fields = ["name", "modality", "ae_title", "is_active", "procedures"]
        labels = {"is_active": "In use (bookable)"}
        error_messages = {
            "ae_title": {"unique": "Another room already uses this AE title; each needs its own."}
        }

    def __init__(self, *args: Any, procedures: QuerySet[Procedure], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["procedures"].queryset = procedures

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        facility = self._facility()
        if facility is None:
            return data
        name = data.get("name")
        others = Room.objects.filter(facility=facility, name=name).exclude(pk=self.instance.pk)
        if name and others.exists():
            self.add_error("name", f"{facility.name} already has a room named {name}.")
        foreign = [p for p in data.get("procedures") or [] if p.facility_id != facility.pk]
        if foreign:
            codes = ", ".join(p.code for p in foreign)
            self.add_error("procedures", f"Not in the catalogue of {facility.name}: {codes}.")
        return data

    def _facility(self) -> Facility | None:
        return self.instance.facility if self.instance.pk else None


class RoomCreateForm(RoomForm):
    """A new room: its facility too, among the administrator's."""

    class Meta(RoomForm.Meta):
        fields = ["facility", *RoomForm.Meta.fields]

    def __init__(self, *args: Any, facilities: QuerySet[Facility], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["facility"].queryset = facilities
        self.fields["facility"].empty_label = None

    def _facility(self) -> Facility | None:
        return self.cleaned_data.get("facility")

    def _get_validation_exclusions(self) -> set[str]:
        """The name per facility is checked in clean(), with a message naming the facility,
        rather than by the model's constraint, whose message names the fields."""
        return {*super()._get_validation_exclusions(), "name"}


class HoursForm(forms.Form):
    """One opening-hours row; a blank row (no weekday, no times) is ignored."""

    weekday = forms.TypedChoiceField(
        choices=[("", "Day…"), *enumerate(WEEKDAY_NAMES)], coerce=int, empty_value=None
    )
    opens = forms.TimeField(widget=TIME)
    closes = forms.TimeField(widget=TIME)


class BaseHoursFormSet(forms.BaseFormSet):
    def clean(self) -> None:
        """Rows closing before they open or overlapping another of their weekday: the
        message goes beside the row at fault."""
        if any(self.errors):
            return
        kept = [
            form
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE", False)
        ]
        problems = room_hours_problems([form.cleaned_data for form in kept])
        for index, message in problems.items():
            kept[index].add_error(None, message)


HoursFormSet = formset_factory(HoursForm, formset=BaseHoursFormSet, extra=2, can_delete=True)


def hours_initial(room: Room) -> list[dict[str, Any]]:
    return [
        {"weekday": h.weekday, "opens": h.opens, "closes": h.closes}
        for h in room.hours.order_by("weekday", "opens")
    ]


class ClosureForm(forms.Form):
    """A closure of the room: from, until (local time), and why."""

    starts_at = forms.DateTimeField(label="Closed from", widget=LOCAL_MINUTE)
    ends_at = forms.DateTimeField(label="Until", widget=LOCAL_MINUTE)
    reason = forms.CharField(max_length=200, required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        starts_at: dt.datetime | None = data.get("starts_at")
        ends_at: dt.datetime | None = data.get("ends_at")
        if starts_at and ends_at and ends_at <= starts_at:
            self.add_error("ends_at", "The closure ends after it starts.")
        return data
