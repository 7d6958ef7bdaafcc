# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# Values written into a Python configuration file (gunicorn's gunicorn.conf.py), documented in python_literal.yml
# and python_settings.yml beside this file. JSON is not Python: true, false and null are NameErrors there, or worse,
# names a config file could define. Every literal here is ASCII, whatever the value holds.

import math
import re

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

SETTING_NAME = re.compile(r'\A[a-z_][a-z0-9_]*\Z')


def _literal(value, where):
    if value is None:
        return 'None'
    if isinstance(value, bool):
        return 'True' if value else 'False'
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise AnsibleFilterError('%s: %r has no Python literal' % (where, value))
        return repr(float(value))
    if isinstance(value, str):
        return ascii(str(value))
    if isinstance(value, bytes):
        raise AnsibleFilterError('%s: bytes are not a configuration value; give a string' % where)
    if isinstance(value, Mapping):
        items = []
        for key in value:
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise AnsibleFilterError('%s: a key of type %s is not a configuration key' % (where, type(key).__name__))
            items.append('%s: %s' % (_literal(key, where), _literal(value[key], '%s[%r]' % (where, key))))
        return '{%s}' % ', '.join(items)
    if isinstance(value, (list, tuple)):
        return '[%s]' % ', '.join(_literal(item, '%s[%d]' % (where, index)) for index, item in enumerate(value))
    raise AnsibleFilterError('%s: a value of type %s has no Python literal' % (where, type(value).__name__))


def python_literal(value, name='value'):
    """The Python literal of a YAML value: None, True, False, numbers, ASCII strings, lists and dicts of them."""
    return _literal(value, name)


def python_settings(settings, name='settings'):
    """``name = literal`` lines, sorted by name, for a dict of settings; a name that is no Python identifier fails."""
    if settings is None:
        return ''
    if not isinstance(settings, Mapping):
        raise AnsibleFilterError('%s must be a dict of settings, not %s' % (name, type(settings).__name__))
    lines = []
    for key in sorted(settings, key=str):
        if not isinstance(key, str) or not SETTING_NAME.match(key):
            raise AnsibleFilterError('%s: %s is not a setting name (lower-case letters, digits and _, not starting with '
                                     'a digit)' % (name, ascii(str(key))))
        lines.append('%s = %s\n' % (key, _literal(settings[key], '%s.%s' % (name, key))))
    return ''.join(lines)


class FilterModule(object):
    def filters(self):
        return {'python_literal': python_literal, 'python_settings': python_settings}
