"""Pre-flight of graceful.wsgi.release: import the app's callable from a release, with the release's own venv.

Usage: <release>/venv/bin/python -c "<this file>" module:attribute <release directory>
Exits 0 and says so when the callable imports and is callable; exits non-zero with the reason (an import error's
traceback, or what the attribute is instead) on stderr otherwise.
"""
import importlib
import sys

module_name, attribute = sys.argv[1].partition(':')[::2]
sys.path.insert(0, sys.argv[2])
target = importlib.import_module(module_name)
for part in (attribute or 'application').split('.'):
    target = getattr(target, part)
if not callable(target):
    sys.exit('%s is %r, not a WSGI callable' % (sys.argv[1], target))
print('%s imports and is callable' % sys.argv[1])
