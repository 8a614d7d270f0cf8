"""Forms of the patient registry pages: the patient, and small formsets for its lists.

They validate and clean input only; the views hand `cleaned_data` to the services.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet
from django.forms import formset_factory

from accounts.models import Facility
from billing.models import Payer
from ris.models import Patient, PatientContact, PatientIdentifier, PatientInsurance
from ris.services import PATIENT_DETAIL_FIELDS

DATE = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")


class PatientForm(forms.ModelForm):
    """Demographics and contact details: what an edit may change."""

    class Meta:
        model = Patient
        fields = list(PATIENT_DETAIL_FIELDS)
        widgets = {"birth_date": DATE}
        # The models' help texts name HL7 fields: useful in the admin, not at the desk.
        help_texts = {"address_other": "", "address_country": ""}


class PatientRegisterForm(PatientForm):
    """A new patient: the facility and MRN too, and the answer to the duplicate warning."""

    facility = forms.ModelChoiceField(queryset=Facility.objects.none(), empty_label=None)
    not_duplicate = forms.BooleanField(
        required=False,
        label="This is a different person",
        help_text="Tick after checking the possible duplicates listed above.",
    )

    class Meta(PatientForm.Meta):
        fields = ["facility", "mrn", "mrn_issuer", *PATIENT_DETAIL_FIELDS]
        help_texts = {**PatientForm.Meta.help_texts, "mrn_issuer": "Empty: the facility's own."}

    def __init__(self, *args: Any, facilities: QuerySet[Facility], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["facility"].queryset = facilities
        self.fields["mrn_issuer"].required = False

    def validate_unique(self) -> None:
        """The MRN's uniqueness needs the default issuer: the service checks it."""


class IdentifierForm(forms.ModelForm):
    class Meta:
        model = PatientIdentifier
        fields = ["type_code", "value", "issuer"]


class ContactForm(forms.ModelForm):
    id = forms.IntegerField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = PatientContact
        fields = ["role", "relationship", "family_name", "given_name", "phone", "email"]


class InsuranceForm(forms.ModelForm):
    id = forms.IntegerField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = PatientInsurance
        fields = [
            "rank",
            "payer",
            "member_id",
            "group_number",
            "subscriber_name",
            "relationship_to_subscriber",
            "valid_from",
            "valid_until",
        ]
        widgets = {"valid_from": DATE, "valid_until": DATE}

    def __init__(self, *args: Any, payers: QuerySet[Payer], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["payer"].queryset = payers


IdentifierFormSet = formset_factory(IdentifierForm, extra=2, can_delete=True)
ContactFormSet = formset_factory(ContactForm, extra=1, can_delete=True)
InsuranceFormSet = formset_factory(InsuranceForm, extra=1, can_delete=True)


def formset_rows(formset: forms.BaseFormSet) -> list[dict[str, Any]]:
    """The rows a formset keeps: filled in and not ticked for removal."""
    rows = []
    for form in formset.forms:
        data = dict(form.cleaned_data)
        if data and not data.pop("DELETE", False):
            rows.append(data)
    return rows


class MergeFindForm(forms.Form):
    mrn = forms.CharField(label="MRN of the duplicate record", max_length=64)


class MergeForm(forms.Form):
    merged = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(
        max_length=200, required=False, widget=forms.TextInput(attrs={"size": 40})
    )
