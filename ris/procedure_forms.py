"""Forms of the procedure catalogue pages: a procedure and the rooms that perform it, and
the catalogue's filters.

They validate and clean input only; the views hand `cleaned_data` to the services.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet

from accounts.models import Facility
from pacs.dicom.vocabulary import Modality
from ris import selectors
from ris.models import Procedure, Room
from ris.services import PROCEDURE_MINUTES

FIRST_MINUTE, LAST_MINUTE = PROCEDURE_MINUTES[0], PROCEDURE_MINUTES[-1]
DURATION_MESSAGE = f"A procedure lasts {FIRST_MINUTE} to {LAST_MINUTE} minutes (24 hours)."


class RoomChoices(forms.ModelMultipleChoiceField):
    """Rooms as "CT 1 (CT)"; with the facility in front when the form spans several."""

    show_facility = False

    def label_from_instance(self, obj: Room) -> str:
        where = f"{obj.facility.name} · " if self.show_facility else ""
        retired = "" if obj.is_active else " (not in use)"
        return f"{where}{obj.name} ({obj.modality}){retired}"


class ProcedureForm(forms.ModelForm):
    """A procedure's own fields and the rooms that perform it."""

    duration_minutes = forms.IntegerField(
        label="Duration (minutes)",
        min_value=FIRST_MINUTE,
        max_value=LAST_MINUTE,
        widget=forms.NumberInput(attrs={"min": FIRST_MINUTE, "max": LAST_MINUTE}),
        error_messages={"min_value": DURATION_MESSAGE, "max_value": DURATION_MESSAGE},
        help_text="The length of the appointment booked for it.",
    )
    rooms = RoomChoices(
        queryset=Room.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Rooms that perform it",
        help_text="Tick none and it is booked in any room of its modality.",
    )

    class Meta:
        model = Procedure
        fields = [
            "code",
            "name",
            "modality",
            "body_part",
            "duration_minutes",
            "uses_contrast",
            "preparation",
            "is_active",
        ]
        labels = {
            "body_part": "Body part",
            "uses_contrast": "Uses contrast",
            "preparation": "Patient preparation",
            "is_active": "Offered (orderable)",
        }
        help_texts = {
            "preparation": "Printed on the appointment letter.",
            "is_active": (
                "Untick to stop offering it for new orders. A procedure is never deleted: "
                "past orders refer to it."
            ),
        }
        widgets = {"preparation": forms.Textarea(attrs={"rows": 4})}

    def __init__(self, *args: Any, rooms: QuerySet[Room], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["rooms"].queryset = rooms
        if self.instance.pk:
            self.initial.setdefault("rooms", list(self.instance.rooms.all()))

    def clean_code(self) -> str:
        """CPT/HCPCS codes are upper case (G0202): fee schedules and HL7 orders match on it."""
        return self.cleaned_data["code"].strip().upper()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        facility = self._facility()
        if facility is None:
            return data
        code = data.get("code")
        if code and selectors.procedure_code_taken(
            facility=facility, code=code, procedure=self.instance if self.instance.pk else None
        ):
            self.add_error("code", f"Code {code} is already in the catalogue of {facility.name}.")
        foreign = [room for room in data.get("rooms") or [] if room.facility_id != facility.pk]
        if foreign:
            names = ", ".join(room.name for room in foreign)
            self.add_error("rooms", f"Not a room of {facility.name}: {names}.")
        return data

    def _facility(self) -> Facility | None:
        return self.instance.facility if self.instance.pk else None


class ProcedureCreateForm(ProcedureForm):
    """A new procedure: its facility too, among the administrator's."""

    class Meta(ProcedureForm.Meta):
        fields = ["facility", *ProcedureForm.Meta.fields]

    def __init__(self, *args: Any, facilities: QuerySet[Facility], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["facility"].queryset = facilities
        self.fields["facility"].empty_label = None
        self.fields["facility"].help_text = "It stays in this facility's catalogue."
        self.fields["rooms"].show_facility = len(facilities) > 1

    def _facility(self) -> Facility | None:
        return self.cleaned_data.get("facility")

    def _get_validation_exclusions(self) -> set[str]:
        """The code per facility is checked in clean(), with a message naming the facility,
        rather than by the model's constraint, whose message names the fields."""
        return {*super()._get_validation_exclusions(), "code"}


class CatalogueFilterForm(forms.Form):
    """The catalogue page's filters; anything unknown is ignored rather than refused."""

    modality = forms.ChoiceField(choices=[("", "any"), *Modality.choices], required=False)
    q = forms.CharField(label="Code or name", max_length=200, required=False)
