"""Request guards: every page needs a login; every response carries security headers."""

from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse

# Paths that authenticate themselves (token or session, answering 401/403 rather
# than redirecting) or need no login at all.
SELF_AUTHENTICATING_PREFIXES = ("/api/", "/dicom-web/")
PUBLIC_PATHS = ("/accounts/login/", "/healthz")


class LoginRequiredMiddleware:
    """Redirect anonymous page requests to the login page; nothing is public by accident."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.static_prefix = "/" + settings.STATIC_URL.lstrip("/")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if (
            request.user.is_authenticated
            or path.startswith(SELF_AUTHENTICATING_PREFIXES)
            or path.startswith(PUBLIC_PATHS)
            or path.startswith(self.static_prefix)
        ):
            return self.get_response(request)
        return redirect_to_login(request.get_full_path())


CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "style-src 'self'",
        "script-src 'self'",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"


class SecurityHeadersMiddleware:
    """Content-Security-Policy and Permissions-Policy (Django 5.2 sets the others)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            # Patient data must not linger in shared or proxy caches.
            response.headers.setdefault("Cache-Control", "no-store, private")
        return response
