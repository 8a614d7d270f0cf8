from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """`Authorization: Bearer <token>`, as DICOMweb clients and viewers send it."""

    keyword = "Bearer"
