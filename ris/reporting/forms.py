"""Forms of the reporting pages: they check shapes; the rules are in services."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from pacs.dicom.vocabulary import Modality
from ris.models import CriticalResult, Order
from ris.reporting.selectors import REPORT_STATES, WorklistFilter


class WorklistFilterForm(forms.Form):
    facility = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    modality = forms.ChoiceField(required=False, choices=[("", "Any"), *Modality.choices])
    priority = forms.ChoiceField(required=False, choices=[("", "Any"), *Order.Priority.choices])
    report = forms.ChoiceField(required=False, choices=[("", "Any"), *REPORT_STATES.items()])
    radiologist = forms.ChoiceField(required=False)
    received_from = forms.DateField(required=False, label="Images from")
    received_to = forms.DateField(required=False, label="Images to")

    def __init__(
        self,
        *args: Any,
        facilities: list[tuple[int, str]],
        radiologists: list[tuple[int, str]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fields["facility"].choices = [("", "All"), *facilities]
        self.fields["radiologist"].choices = [
            ("", "Anyone"),
            ("me", "Me"),
            ("none", "Nobody (unclaimed)"),
            *[(str(pk), name) for pk, name in radiologists],
        ]

    def filters(self) -> WorklistFilter:
        if not self.is_valid():
            return WorklistFilter()
        data = self.cleaned_data
        return WorklistFilter(
            facility=data["facility"],
            modality=data["modality"],
            priority=data["priority"],
            report=data["report"],
            radiologist=data["radiologist"],
            received_from=data["received_from"],
            received_to=data["received_to"],
        )


class SectionsField(forms.CharField):
    """The editor's sections, posted as JSON [{"title", "text"}, ...] (the page's script
    keeps it in step with the section textareas)."""

    def to_python(self, value: Any) -> list[dict[str, str]]:
        text = super().to_python(value)
        try:
            sections = json.loads(text or "[]")
        except ValueError as error:
            raise forms.ValidationError("The report's sections could not be read.") from error
        if not isinstance(sections, list):
            raise forms.ValidationError("The report's sections could not be read.")
        return sections


def sections_from_post(data: Any, count: int) -> list[dict[str, str]]:
    """The sections of a posted editor form without script: title_N and text_N fields."""
    return [
        {"title": data.get(f"title_{i}", ""), "text": data.get(f"text_{i}", "")}
        for i in range(count)
    ]


class SignForm(forms.Form):
    password = forms.CharField(
        widget=forms.PasswordInput(
            attrs={"autocomplete": "current-password", "id": "sign-password"}
        ),
        required=False,
        label="Your password, to sign",
    )


class CorrectionForm(SignForm):
    reason = forms.CharField(max_length=500, label="Why it is corrected")


class CriticalForm(forms.Form):
    finding = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), max_length=5000, label="Critical finding"
    )


class AcknowledgeForm(forms.Form):
    via = forms.ChoiceField(choices=CriticalResult.Channel.choices, initial="app")
    note = forms.CharField(
        max_length=500, required=False, label="Who took it (name, read back, time)"
    )


class AssignForm(forms.Form):
    radiologist = forms.TypedChoiceField(coerce=int, empty_value=None, required=False)

    def __init__(self, *args: Any, radiologists: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["radiologist"].choices = [("", "Nobody (back to the list)"), *radiologists]
