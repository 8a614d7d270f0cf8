"""RadPACS settings: one module, every value read from the environment.

The defaults run a fresh clone with nothing else installed: SQLite in var/,
images in var/images, Celery eager. Production sets DATABASE_URL, REDIS_URL,
SECRET_KEY (or SECRET_KEY_FILE), ALLOWED_HOSTS and, for S3, IMAGE_STORAGE=s3.
"""

import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    """Read NAME, or the contents of the file named by NAME_FILE (Docker/K8s secrets)."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        return Path(file_path).read_text().strip()
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = env(name)
    if not value:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = env(name)
    return int(value) if value else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


TESTING = "pytest" in sys.modules
DEBUG = env_bool("DEBUG")

DEVELOPMENT_SECRET_KEY = "radpacs-development-key-never-use-in-production"
SECRET_KEY = env("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if SECRET_KEY == DEVELOPMENT_SECRET_KEY and not (DEBUG or TESTING):
    raise ImproperlyConfigured(
        "SECRET_KEY is the development key while DEBUG is off. Set SECRET_KEY (or "
        "SECRET_KEY_FILE) to a long random value, or DEBUG=1 for a development run."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

VAR_DIR = Path(env("VAR_DIR", str(BASE_DIR / "var")))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "accounts",
    "ris",
    "ris.hl7",
    "ris.reporting",
    "pacs",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "accounts.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Axes last: it answers locked-out logins itself.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.navigation",
            ],
        },
    },
]

# Database: PostgreSQL in production and CI, SQLite file as the embedded default.
# SQLite is shared by the web, DIMSE and HL7 processes: WAL and IMMEDIATE
# transactions avoid most "database is locked" errors.
DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        # Kept 60 s: a new PostgreSQL connection per request or task (and its statements
        # prepared again) doubled frame latency and halved an HL7 worker's rate.
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        # A kept connection is checked (SELECT 1) before its first use in each request or
        # task, so one the database dropped is replaced instead of failing that request.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
elif env_bool("DATABASE_PREPARED_STATEMENTS", True):
    # Lets the statements config.plain_sql runs for every HL7 message, C-STORE or pixel
    # request be prepared on the server, once per connection (their planning cost more
    # than their execution). Django's own queries are never prepared (client-side
    # binding). Off behind a pooler in transaction mode that cannot keep them
    # (PgBouncer before 1.21, or with max_prepared_statements = 0).
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 5

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"

# Sessions: a clinical workstation left alone logs out after the idle time.
SESSION_COOKIE_AGE = env_int("SESSION_IDLE_SECONDS", 30 * 60)
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG and not TESTING)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Security headers. HTTPS redirect and HSTS are for the deployment behind TLS.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD")
if env_bool("BEHIND_TLS_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Trust X-Forwarded-For for the audit trail's client address only behind a known proxy.
USE_X_FORWARDED_FOR = env_bool("USE_X_FORWARDED_FOR")

# Login throttling (django-axes): lock a username from an address after repeated failures.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("LOGIN_COOLOFF_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_IPWARE_PROXY_COUNT = 1 if USE_X_FORWARDED_FOR else 0
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# The viewer is built by npm (frontend/, `make install`) and served as static/viewer/.
STATICFILES_DIRS = [BASE_DIR / "static", ("viewer", BASE_DIR / "frontend" / "dist")]
# Development and tests serve static files straight from the apps; production from STATIC_ROOT.
WHITENOISE_USE_FINDERS = DEBUG or TESTING
WHITENOISE_AUTOREFRESH = DEBUG or TESTING

# Image storage: local folder by default, S3 (or an S3-compatible store) when IMAGE_STORAGE=s3.
IMAGE_STORAGE_DIR = Path(env("IMAGE_STORAGE_DIR", str(VAR_DIR / "images")))
if env("IMAGE_STORAGE", "local") == "s3":
    IMAGE_STORAGE_BACKEND = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env("S3_BUCKET"),
            "endpoint_url": env("S3_ENDPOINT_URL") or None,
            "region_name": env("S3_REGION") or None,
            "access_key": env("S3_ACCESS_KEY_ID") or None,
            "secret_key": env("S3_SECRET_ACCESS_KEY") or None,
            "location": env("S3_PREFIX"),
            "file_overwrite": False,
            "default_acl": None,
            "querystring_auth": True,
        },
    }
else:
    IMAGE_STORAGE_BACKEND = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(IMAGE_STORAGE_DIR), "base_url": None},
    }
# With S3, received files are first written durably here and uploaded by a worker, so
# S3 latency never reaches a C-STORE. Must be local disk shared by listener and worker.
IMAGE_SPOOL_DIR = Path(env("IMAGE_SPOOL_DIR", str(VAR_DIR / "spool")))
# Billing exports (kept so a re-download gives the same bytes): beside the images, under
# "exports/" of the same store.
if IMAGE_STORAGE_BACKEND["BACKEND"].endswith("S3Storage"):
    EXPORT_STORAGE_BACKEND = {
        **IMAGE_STORAGE_BACKEND,
        "OPTIONS": {
            **IMAGE_STORAGE_BACKEND["OPTIONS"],
            "location": f"{env('S3_PREFIX')}/exports".lstrip("/"),
        },
    }
else:
    EXPORT_STORAGE_BACKEND = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(VAR_DIR / "exports"), "base_url": None},
    }

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "images": IMAGE_STORAGE_BACKEND,
    "exports": EXPORT_STORAGE_BACKEND,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or TESTING
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Celery: Redis when REDIS_URL is set, otherwise eager (tasks run in the caller).
REDIS_URL = env("REDIS_URL")
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery closes Django's database connections around every task unless this is set;
# config.celery recycles them by DATABASE_CONN_MAX_AGE instead (a new PostgreSQL
# connection cost a worker more CPU than applying an HL7 message).
CELERY_DB_REUSE_MAX = 1000
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE = {
    # Uploads whatever an interrupted worker left in the S3 spool.
    "flush-image-spool": {"task": "pacs.tasks.spool_flush", "schedule": 300.0},
    # Studies whose follow-up never ran (a listener killed mid-push).
    "refresh-pending-studies": {"task": "pacs.tasks.refresh_pending_studies", "schedule": 60.0},
    # HL7 messages stored and acknowledged whose processing task was lost.
    "requeue-hl7-messages": {"task": "ris.hl7.tasks.requeue_waiting_messages", "schedule": 60.0},
    # HL7 messages to partners whose retry is due, or whose delivery task was lost.
    "deliver-due-hl7-messages": {"task": "ris.hl7.tasks.deliver_due_messages", "schedule": 30.0},
}

if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }

REST_FRAMEWORK = {
    # Bearer first: an anonymous call gets 401 with `WWW-Authenticate: Bearer`.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        "accounts.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": env("API_ANON_RATE", "60/minute")},
}

SPECTACULAR_SETTINGS = {
    "TITLE": "RadPACS API",
    "DESCRIPTION": "RIS + PACS: patients, orders, scheduling, images, reports, billing.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One name for the exam status, wherever a serializer uses it.
    "ENUM_NAME_OVERRIDES": {"ExamStatusEnum": "ris.models.Order.Status"},
}

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
if TESTING:
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "radpacs@localhost")
# Where users reach the site: links in e-mails (critical results) start with it.
SITE_URL = env("SITE_URL", "http://localhost:8000")

# DICOM and HL7 listeners (used by the archive and HL7 issues).
DICOM_AE_TITLE = env("DICOM_AE_TITLE", "RADPACS")
DICOM_HOST = env("DICOM_HOST", "127.0.0.1")
DICOM_PORT = env_int("DICOM_PORT", 11112)
# Calling AE titles must be a known DicomNode or Room unless this is on; unknown callers
# then store into DICOM_DEFAULT_FACILITY (a facility code).
DICOM_ALLOW_UNKNOWN_CALLERS = env_bool("DICOM_ALLOW_UNKNOWN_CALLERS")
DICOM_DEFAULT_FACILITY = env("DICOM_DEFAULT_FACILITY")
DICOM_REQUIRE_CALLED_AE_TITLE = env_bool("DICOM_REQUIRE_CALLED_AE_TITLE")
DICOM_MAX_ASSOCIATIONS = env_int("DICOM_MAX_ASSOCIATIONS", 32)
DICOM_MAX_PDU_SIZE = env_int("DICOM_MAX_PDU_SIZE", 256 * 1024)
DICOM_TIMEOUT = env_int("DICOM_TIMEOUT", 60)
DICOM_NETWORK_TIMEOUT = env_int("DICOM_NETWORK_TIMEOUT", 120)
DICOM_FIND_LIMIT = env_int("DICOM_FIND_LIMIT", 5000)
# Several dicom_server processes may share DICOM_PORT (the kernel balances associations).
DICOM_REUSE_PORT = env_bool("DICOM_REUSE_PORT", True)
# dicom_server processes forked to accept from one shared socket (balanced by load).
DICOM_PROCESSES = env_int("DICOM_PROCESSES", 1)
# A stored SOP Instance UID re-sent with different bytes: reject | keep_first | overwrite.
DICOM_DUPLICATE_POLICY = env("DICOM_DUPLICATE_POLICY", "reject")
# Associations that only store (and echo) skip pynetdicom's data phase (pacs/dimse/storage_scp.py).
DICOM_FAST_STORE = env_bool("DICOM_FAST_STORE", True)
HL7_HOST = env("HL7_HOST", "127.0.0.1")
HL7_PORT = env_int("HL7_PORT", 2575)
# Messages from senders that are not a registered HL7 partner go to this facility (a
# facility code); empty: they are rejected (AR).
HL7_DEFAULT_FACILITY = env("HL7_DEFAULT_FACILITY")
# Largest message the listener takes (bytes between the MLLP marks).
HL7_MAX_MESSAGE_BYTES = env_int("HL7_MAX_MESSAGE_BYTES", 4 * 1024 * 1024)
# A connection with no traffic for this long is closed (senders reconnect).
HL7_IDLE_TIMEOUT = env_int("HL7_IDLE_TIMEOUT", 600)
# Connections served at once, per listener process; each holds a PostgreSQL connection
# while it is open (count them in max_connections).
HL7_MAX_CONNECTIONS = env_int("HL7_MAX_CONNECTIONS", 64)
# How long a process reuses what it read of the HL7 partners (admin changes take this
# long to reach a running listener); tests read them afresh.
HL7_PARTNER_CACHE_SECONDS = env_int("HL7_PARTNER_CACHE_SECONDS", 0 if TESTING else 30)
# Tries of a message to a partner (backoff 30 s doubling, at most 1 h) before it is dead.
HL7_OUTBOUND_MAX_ATTEMPTS = env_int("HL7_OUTBOUND_MAX_ATTEMPTS", 10)

# DICOMweb: the most matches one QIDO-RS response holds (a client pages with offset),
# and the origins of external viewers allowed to call it from a browser (CORS).
DICOMWEB_MAX_RESULTS = env_int("DICOMWEB_MAX_RESULTS", 1000)
DICOMWEB_CORS_ORIGINS = env_list("DICOMWEB_CORS_ORIGINS")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "axes": {"level": "WARNING"},
        # pynetdicom logs every DIMSE message at INFO: a line per image on the C-STORE
        # hot path. Our handlers log refusals and errors themselves.
        "pynetdicom": {"level": env("PYNETDICOM_LOG_LEVEL", "WARNING")},
    },
}
