"""The new-order form of the front desk: checked before the service is called, so bad
input is a message beside its field and never a 500."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet

from ris import services
from ris.models import Order, Procedure


class OrderForm(forms.Form):
    procedure = forms.ModelChoiceField(queryset=Procedure.objects.none(), empty_label=None)
    priority = forms.ChoiceField(choices=Order.Priority.choices, initial=Order.Priority.ROUTINE)
    referring_physician_name = forms.CharField(
        label="Referring physician", max_length=200, required=False
    )
    reason = forms.CharField(
        label="Reason for the exam", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    diagnosis_codes = forms.CharField(
        label="Diagnosis (ICD-10)",
        max_length=200,
        required=False,
        help_text="Comma separated, e.g. R51.9, S06.0X0A",
    )
    placer_order_number = forms.CharField(
        label="Placer order number",
        max_length=64,
        required=False,
        help_text="The HIS's order number, when the request came on paper from the HIS.",
    )

    def __init__(self, *args: Any, procedures: QuerySet[Procedure], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["procedure"].queryset = procedures
        self.fields["procedure"].label_from_instance = lambda p: (
            f"{p.modality} · {p.name} ({p.code}, {p.duration_minutes} min)"
        )

    def clean_diagnosis_codes(self) -> str:
        try:
            return services.icd10_codes_clean(self.cleaned_data["diagnosis_codes"])
        except services.RisError as error:
            raise forms.ValidationError(str(error)) from error
