"""Django settings of the test OpenID provider (django-oidc-provider)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

CONFIG = json.loads(Path(os.environ["HUBOPS_OP_CONFIG"]).read_text())

SECRET_KEY = secrets.token_urlsafe(32)  # one test run; sessions need nothing longer
DEBUG = False
ALLOWED_HOSTS = [CONFIG["host"]]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oidc_provider",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.support.django_op.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [str(Path(__file__).parent / "templates")],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": CONFIG["db"]}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
LOGIN_URL = "/accounts/login/"
CSRF_TRUSTED_ORIGINS = [CONFIG["site_url"]]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SITE_URL = CONFIG["site_url"]
OIDC_USERINFO = "tests.support.django_op.claims.userinfo"
OIDC_EXTRA_SCOPE_CLAIMS = "tests.support.django_op.claims.GroupsClaims"
