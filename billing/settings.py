"""Tally settings: one file, read from the environment through small typed helpers."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import dj_database_url
from django.utils.csp import CSP

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TALLY_VAR_DIR", BASE_DIR / "var"))


def envbool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = envbool("DEBUG", False)
# The development default starts with "django-insecure-" so that `check --deploy` names it.
SECRET_KEY = os.environ.get("SECRET_KEY", "django-insecure-tally-development-key-change-me-in-production")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "django_htmx",
    "ninja",  # its Swagger UI served from our static files, not a CDN
    "axes",
    "ledger",
    "billing",
    "team",
    "webhooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "axes.middleware.AxesMiddleware",
    "team.recent.RememberOrganizationMiddleware",
]

ROOT_URLCONF = "billing.urls"
WSGI_APPLICATION = "billing.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "billing.context_processors.organization_menu",
            ],
        },
    }
]

# PostgreSQL is the only database. Without DATABASE_URL: the embedded server that `make run`
# starts (scripts/embedded_pg.py), reached over its Unix socket in var/postgres.
VAR_DIR.mkdir(parents=True, exist_ok=True)
EMBEDDED_DATABASE_URL = f"postgres://postgres@{quote(str(VAR_DIR.resolve() / 'postgres'), safe='')}/tally"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", EMBEDDED_DATABASE_URL),
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
        # Off by default: the check is a round trip at the start of every request. A kept
        # connection that died (the database restarted) fails one request and is replaced.
        conn_health_checks=envbool("DB_CONN_HEALTH_CHECKS", False),
    )
}
# Parameters bound by the server, so psycopg prepares the statements a connection runs
# often (DB_PREPARE_THRESHOLD times; 0 never, as a transaction-pooling PgBouncer older than
# 1.21 needs): PostgreSQL then plans the API's per-request queries once per connection.
DATABASES["default"]["OPTIONS"] = {
    "server_side_binding": envbool("DB_SERVER_SIDE_BINDING", True),
    "prepare_threshold": envint("DB_PREPARE_THRESHOLD", 5) or None,
}
DATABASES["default"]["TEST"] = (
    {"NAME": os.environ.get("TEST_DATABASE_NAME")} if os.environ.get("TEST_DATABASE_NAME") else {}
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Brute-force protection: five failures lock the username+address pair for 15 minutes.
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = 0.25
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_RESET_ON_SUCCESS = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

MAILERS: dict[str, dict[str, object]] = {
    "default": {
        "BACKEND": os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend"),
    }
}
if os.environ.get("EMAIL_FILE_PATH"):
    # With the file-based backend each email is written to a file in this directory.
    MAILERS["default"]["OPTIONS"] = {"file_path": os.environ["EMAIL_FILE_PATH"]}
elif os.environ.get("EMAIL_HOST"):
    # With the SMTP backend: the relay, reached with STARTTLS unless EMAIL_USE_TLS=0.
    MAILERS["default"]["OPTIONS"] = {
        "host": os.environ["EMAIL_HOST"],
        "port": envint("EMAIL_PORT", 587),
        "username": os.environ.get("EMAIL_HOST_USER", ""),
        "password": os.environ.get("EMAIL_HOST_PASSWORD", ""),
        "use_tls": envbool("EMAIL_USE_TLS", True),
    }
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Tally <billing@tally.localhost>")

# HTTPS. With DEBUG off every request is redirected to HTTPS, browsers are told to use
# nothing else (HSTS) and the session and CSRF cookies are sent over HTTPS only. Only an
# explicit ALLOW_PLAIN_HTTP=1 turns that off, for a server on plain HTTP: `make run`, the
# benches and the tests (tests/conftest.py).
ALLOW_PLAIN_HTTP = envbool("ALLOW_PLAIN_HTTP", DEBUG)
SECURE_SSL_REDIRECT = not ALLOW_PLAIN_HTTP
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not ALLOW_PLAIN_HTTP
SECURE_HSTS_SECONDS = 0 if ALLOW_PLAIN_HTTP else envint("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", True)
if os.environ.get("SECURE_PROXY_SSL_HEADER"):
    # Behind a proxy that ends TLS: the header it sets to "https" (and strips from clients),
    # e.g. X-Forwarded-Proto. Without it every request would look like plain HTTP.
    _proxy_header = os.environ["SECURE_PROXY_SSL_HEADER"].upper().replace("-", "_")
    SECURE_PROXY_SSL_HEADER = (f"HTTP_{_proxy_header}", "https")
SESSION_COOKIE_HTTPONLY = True
# Django's defaults, named here so the security settings are read in one place.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Content Security Policy, on every response: scripts and style sheets from Tally's own
# origin or carrying the response's nonce (templates write it with {% csp_nonce_attr %}).
# Style attributes stay allowed: the gauges set their width in one, and an attribute cannot
# load anything or run script. The 500 page is rendered without a request, so without a
# nonce: its inline style is allowed by its hash (tests/test_security.py recomputes it).
ERROR_PAGE_STYLE_HASH = "'sha256-PCsLnv+g6hgSrD860U3kee6EVOH3fOpJRXwHgv8sm3k='"
SECURE_CSP: dict[str, list[str]] = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE, ERROR_PAGE_STYLE_HASH],
    "style-src-attr": [CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    # A pack bought with Stripe is a form posted to Tally that redirects to Stripe Checkout.
    "form-action": [CSP.SELF, "https://checkout.stripe.com"],
    "frame-ancestors": [CSP.NONE],
}

# Celery: Redis when REDIS_URL is set; otherwise an embedded file-system broker, so
# `make run` needs no server. Tasks are JSON, time-limited and acknowledged late.
REDIS_URL = os.environ.get("REDIS_URL", "")
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
if not REDIS_URL:
    _queue_dir = VAR_DIR / "celery-queue"
    _queue_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(VAR_DIR / "celery-control"),
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = REDIS_URL or None
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", 300)
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Deployments (and the benches) that share one Redis keep apart by queue name.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "celery")
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# The scheduler: the month close fans out hourly (each organization closes once its own
# local month has ended); holds and lots past their expiry are released and expired every
# five minutes.
CELERY_BEAT_SCHEDULE = {
    "close-due-months": {"task": "billing.close_due_months", "schedule": 3600.0},
    "release-stale-holds": {"task": "billing.release_stale_holds", "schedule": 300.0},
    "expire-due-lots": {"task": "billing.expire_due_lots", "schedule": 300.0},
    "sweep-notices": {"task": "billing.sweep_notices", "schedule": 60.0},
    # Invoices whose charge is due: retries of failed payments (1, 3 and 7 days on).
    "collect-due-invoices": {"task": "billing.collect_due_invoices", "schedule": 3600.0},
    "prune-audit-log": {"task": "team.prune_audit_log", "schedule": 24 * 3600.0},
    "retry-webhook-deliveries": {"task": "webhooks.retry_deliveries", "schedule": 60.0},
}

# The cache holds the API's per-key request counts: Redis when REDIS_URL is set, so every
# web worker shares one count; an in-process cache otherwise.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "tally",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# JSON API rate limit: requests per key per window (seconds); 0 turns it off.
API_RATE_LIMIT = envint("API_RATE_LIMIT", 100_000)
API_RATE_WINDOW = envint("API_RATE_WINDOW", 60)

# Payments: "local" is the offline test checkout; "stripe" uses Stripe Checkout.
PAYMENT_PROVIDER = os.environ.get("PAYMENT_PROVIDER", "local")
# The local checkout credits a pack for nothing: with DEBUG off the web server refuses to
# start on it unless this says it is wanted (billing.payments.refuse_unsafe_provider).
ALLOW_LOCAL_PAYMENTS = envbool("ALLOW_LOCAL_PAYMENTS", DEBUG)
STRIPE_API_KEY = os.environ.get("STRIPE_API_KEY", "")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "")
# A checkout left unpaid this long is shown as expired and takes no payment (Stripe's
# Checkout Sessions expire after 24 hours).
CHECKOUT_SESSION_HOURS = envint("CHECKOUT_SESSION_HOURS", 24)
SALES_EMAIL = os.environ.get("SALES_EMAIL", "sales@tally.localhost")  # Enterprise "contact us"

# Outgoing webhooks (webhooks/). Endpoints on loopback, private, link-local or metadata
# addresses are refused unless WEBHOOKS_ALLOW_PRIVATE=1 (`make run` and the tests, whose
# receivers run on this machine). Each attempt waits at most WEBHOOKS_TIMEOUT seconds; a
# failed one is retried after each of WEBHOOKS_RETRY_DELAYS in turn (seconds: 30 s, 2 min,
# 10 min, 1 h, 3 h, 6 h, 12 h, 24 h, 24 h: ten attempts over three days), then given up.
WEBHOOKS_ALLOW_PRIVATE = envbool("WEBHOOKS_ALLOW_PRIVATE", False)
WEBHOOKS_TIMEOUT = float(os.environ.get("WEBHOOKS_TIMEOUT", 10))
WEBHOOKS_RETRY_DELAYS = tuple(
    int(delay) for delay in envlist("WEBHOOKS_RETRY_DELAYS", "30,120,600,3600,10800,21600,43200,86400,86400")
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
