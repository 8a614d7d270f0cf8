"""REST API of the patient registry: scoped by facility, audited, written through the
services (registration with a duplicate check, updates, merges)."""

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import audit
from accounts.models import Facility
from accounts.permissions import HasCapability
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from billing.models import Payer
from ris import selectors, services
from ris.api.common import AuditedReadMixin
from ris.models import Patient, PatientContact, PatientIdentifier, PatientInsurance

LISTS = ("identifiers", "contacts", "insurance")


def _user(serializer: serializers.Field) -> Any:
    request = serializer.context.get("request")
    return request.user if request else None


class PatientIdentifierSerializer(serializers.ModelSerializer):
    class Meta:
        model = PatientIdentifier
        fields = ["type_code", "value", "issuer"]
        extra_kwargs = {"issuer": {"required": False}, "type_code": {"required": False}}
        validators: list[Any] = []


class PatientContactSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(required=False, help_text="Give it to change that contact.")

    class Meta:
        model = PatientContact
        fields = ["id", "role", "relationship", "family_name", "given_name", "phone", "email"]


class PatientInsuranceSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(required=False, help_text="Give it to change that coverage.")
    payer = serializers.PrimaryKeyRelatedField(queryset=Payer.objects.none())
    payer_name = serializers.CharField(source="payer.name", read_only=True)

    class Meta:
        model = PatientInsurance
        fields = [
            "id",
            "rank",
            "payer",
            "payer_name",
            "member_id",
            "group_number",
            "subscriber_name",
            "relationship_to_subscriber",
            "valid_from",
            "valid_until",
        ]
        extra_kwargs = {"rank": {"min_value": 1}}

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["payer"].queryset = Payer.objects.filter(
            facility__in=facility_ids_for(_user(self), Capability.EDIT_PATIENTS)
        )
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("valid_from"), attrs.get("valid_until")
        if start and end and end < start:
            raise ValidationError({"valid_until": "Ends before it starts."})
        return attrs


class PatientSerializer(serializers.ModelSerializer):
    facility = serializers.SlugRelatedField(slug_field="code", queryset=Facility.objects.all())
    dicom_name = serializers.CharField(read_only=True)
    identifiers = PatientIdentifierSerializer(
        many=True, required=False, help_text="Other identifiers (HL7 PID-3); replaces the list."
    )
    contacts = PatientContactSerializer(
        many=True, required=False, help_text="Next of kin, emergency contacts; replaces the list."
    )
    insurance = PatientInsuranceSerializer(
        many=True, required=False, help_text="Coverage, 1 = primary; replaces the list."
    )
    not_duplicate = serializers.BooleanField(
        write_only=True,
        required=False,
        default=False,
        help_text="Register even though possible duplicates exist (after checking them).",
    )

    class Meta:
        model = Patient
        fields = [
            "id",
            "facility",
            "mrn",
            "mrn_issuer",
            "family_name",
            "given_name",
            "middle_name",
            "name_prefix",
            "name_suffix",
            "dicom_name",
            "birth_date",
            "sex",
            "address_street",
            "address_other",
            "address_city",
            "address_state",
            "address_postal_code",
            "address_country",
            "home_phone",
            "mobile_phone",
            "email",
            "identifiers",
            "contacts",
            "insurance",
            "merged_into",
            "not_duplicate",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["merged_into", "created_at", "updated_at"]
        extra_kwargs = {"mrn_issuer": {"required": False}}
        # Uniqueness is checked by the service, which knows the issuer default.
        validators: list[Any] = []

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # Only facilities where the caller registers patients; any other code reads as
        # unknown, so the API does not tell which facilities exist.
        fields["facility"].queryset = Facility.objects.filter(
            pk__in=facility_ids_for(_user(self), Capability.EDIT_PATIENTS)
        )
        if isinstance(self.instance, Patient):
            # A record's identity: changed only by a merge.
            for name in ("facility", "mrn", "mrn_issuer"):
                fields[name].read_only = True
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        facility = attrs.get("facility") or getattr(self.instance, "facility", None)
        for row in attrs.get("insurance") or []:
            if facility is not None and row["payer"].facility_id != facility.pk:
                raise ValidationError(
                    {"insurance": f"{row['payer']} is not a payer of {facility}."}
                )
        return attrs


class PatientFilterSerializer(serializers.Serializer):
    q = serializers.CharField(
        required=False, help_text="Words matching a name start, the MRN, an identifier, a date."
    )
    mrn = serializers.CharField(required=False, help_text="Exact MRN.")
    mrn_issuer = serializers.CharField(required=False)
    birth_date = serializers.DateField(required=False)
    identifier = serializers.CharField(required=False, help_text="Another identifier, exact.")
    include_merged = serializers.BooleanField(
        required=False, default=False, help_text="Records merged into another one too."
    )


class PossibleDuplicateSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="display_name")

    class Meta:
        model = Patient
        fields = ["id", "mrn", "name", "birth_date"]


class DuplicatesFoundSerializer(serializers.Serializer):
    detail = serializers.CharField()
    possible_duplicates = PossibleDuplicateSerializer(many=True)


class PatientMergeSerializer(serializers.Serializer):
    merged = serializers.PrimaryKeyRelatedField(
        queryset=Patient.objects.none(), help_text="The duplicate record, closed by the merge."
    )
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["merged"].queryset = Patient.objects.visible_to(
            _user(self), Capability.EDIT_PATIENTS
        )
        return fields


class PatientViewSet(
    AuditedReadMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = PatientSerializer
    permission_classes = [HasCapability]
    required_capability = Capability.VIEW_PATIENTS
    capability_by_method = {
        "POST": Capability.EDIT_PATIENTS,
        "PUT": Capability.EDIT_PATIENTS,
        "PATCH": Capability.EDIT_PATIENTS,
    }
    audit_object_type = "patient"

    def get_queryset(self) -> QuerySet[Patient]:
        user = self.request.user
        if self.action == "list":
            patients = self._filtered()
        else:
            # A record is found by id even when merged: it says where it went.
            patients = Patient.objects.visible_to(user, Capability.VIEW_PATIENTS)
        return patients.select_related("facility").prefetch_related(
            "identifiers", "contacts", "insurance__payer"
        )

    def _filtered(self) -> QuerySet[Patient]:
        params = PatientFilterSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        given = params.validated_data
        patients = selectors.patient_search(
            user=self.request.user,
            query=given.get("q", ""),
            include_merged=given["include_merged"],
        )
        for name in ("mrn", "mrn_issuer", "birth_date"):
            if name in given:
                patients = patients.filter(**{name: given[name]})
        if "identifier" in given:
            holders = PatientIdentifier.objects.filter(value=given["identifier"])
            patients = patients.filter(pk__in=holders.values("patient_id"))
        return patients

    @extend_schema(parameters=[PatientFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Patients, 50 a page: search with `q`, or look one up by MRN or identifier."""
        return super().list(request, *args, **kwargs)

    @extend_schema(responses={201: PatientSerializer, 409: DuplicatesFoundSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Register a patient. If someone alike is registered already, the answer is a
        409 listing them; send `"not_duplicate": true` to register anyway."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        facility: Facility = data.pop("facility")
        if not data.pop("not_duplicate"):
            duplicates = selectors.possible_duplicates(
                facility=facility,
                family_name=data["family_name"],
                given_name=data.get("given_name", ""),
                birth_date=data.get("birth_date"),
            )
            if duplicates:
                audit.record_list(
                    request,
                    objects=duplicates,
                    object_type="patient",
                    door=audit.Door.API,
                    query={"possible_duplicates_of": data["family_name"]},
                )
                found = DuplicatesFoundSerializer(
                    {
                        "detail": "Possible duplicates are registered; check them, then send "
                        '"not_duplicate": true to register anyway.',
                        "possible_duplicates": duplicates,
                    }
                )
                return Response(found.data, status=status.HTTP_409_CONFLICT)
        try:
            patient = services.patient_create(
                facility=facility, actor=request.user, door=audit.Door.API, **data
            )
        except services.RisError as error:
            raise ValidationError({"detail": str(error)}) from error
        return Response(self._read(patient.pk), status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Change demographics; a list that is sent replaces the patient's list."""
        patient = self._editable()
        serializer = self.get_serializer(
            patient, data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data.pop("not_duplicate", None)
        try:
            services.patient_update(
                patient=patient, actor=request.user, door=audit.Door.API, **data
            )
        except services.RisError as error:
            raise ValidationError({"detail": str(error)}) from error
        return Response(self._read(patient.pk))

    @extend_schema(request=PatientMergeSerializer, responses=PatientSerializer)
    @action(detail=True, methods=["post"])
    def merge(self, request: Request, pk: str | None = None) -> Response:
        """Merge the `merged` record into this one (HL7 A40): its orders, images,
        identifiers, contacts and insurance move here, its MRN becomes an identifier."""
        survivor = self._editable()
        body = PatientMergeSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        try:
            services.patient_merge(
                surviving=survivor,
                merged=body.validated_data["merged"],
                actor=request.user,
                door=audit.Door.API,
                reason=body.validated_data.get("reason", ""),
            )
        except services.RisError as error:
            raise ValidationError({"merged": str(error)}) from error
        return Response(self._read(survivor.pk))

    def _editable(self) -> Patient:
        """The patient of the URL: another facility's is a 404, a facility where the user
        only reads patients a 403."""
        patient = self.get_object()
        if patient.facility_id not in facility_ids_for(self.request.user, Capability.EDIT_PATIENTS):
            raise PermissionDenied("Your role does not allow changing this patient.")
        return patient

    def _read(self, pk: int) -> dict[str, Any]:
        """The patient just written, as the answer to the write."""
        patient = (
            Patient.objects.select_related("facility")
            .prefetch_related("identifiers", "contacts", "insurance__payer")
            .get(pk=pk)
        )
        return self.get_serializer(patient).data
