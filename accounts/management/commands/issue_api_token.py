"""Issue an API token for a user, printing only the token, for scripts:

TOKEN=$(python manage.py issue_api_token alice)

Only the token's digest is stored, so it is shown this once: a user who has one gets
an error, and `--rotate` replaces it (the old one stops working).
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.services import TokenExists, api_token_issue


class Command(BaseCommand):
    help = "Print a new API token for USERNAME; --rotate replaces the one they have."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--rotate", action="store_true", help="Revoke and issue a new one.")

    def handle(self, *args: Any, username: str, rotate: bool, **options: Any) -> None:
        try:
            user = User.objects.get(username=username, is_active=True)
        except User.DoesNotExist as error:
            raise CommandError(f"No active user named {username!r}.") from error
        try:
            token = api_token_issue(user, rotate=rotate)
        except TokenExists as error:
            raise CommandError(
                f"{error}; it is stored hashed and cannot be shown again: "
                "use --rotate to replace it"
            ) from error
        self.stdout.write(token)
