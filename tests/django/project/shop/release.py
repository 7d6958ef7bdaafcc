"""The release id this source tree is, shown by every page; tests/django/make_release.py rewrites it per release."""

RELEASE = "v1"
