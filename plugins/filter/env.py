# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# The app's environment as a systemd EnvironmentFile (documented in env_file.yml beside this file).
#
# systemd reads the file with load_env_file() (src/basic/env-file.c, parse_env_file_internal): inside double
# quotes a backslash before one of SHELL_NEED_ESCAPE (" \ ` $) gives that character, a backslash before a newline
# is dropped with it, a backslash before anything else stays, and every other character, newlines and carriage
# returns included, is kept as it is. Values are not expanded ($VAR, %s) for services: exec_context_load_environment()
# (src/core/execute.c) uses load_env_file(), not merge_env_file(). systemd's own write_env_var() writes values the
# same way as here. Messages never quote a value: secret values must not reach the output.

import re

from ansible.errors import AnsibleFilterError

from collections.abc import Mapping

try:
    from ansible.parsing.vault import EncryptedString  # ansible-core 2.19 and later
except ImportError:
    EncryptedString = None

NAME_PATTERN = re.compile(r'\A[A-Za-z_][A-Za-z0-9_]*\Z')
ESCAPE = re.compile(r'([\\"`$])')
# Not Unicode scalar values (surrogates), and the noncharacters: systemd refuses the whole file for one of them.
SURROGATES = re.compile('[\ud800-\udfff]')
NONCHARACTERS = re.compile('[\ufdd0-\ufdef%s]' % ''.join(
    chr(plane * 0x10000 + 0xfffe) + chr(plane * 0x10000 + 0xffff) for plane in range(17)))


def _refusal(text):
    """Why systemd cannot take this value from an environment file, without quoting it; None when it can."""
    if '\x00' in text:
        return 'contains a NUL character, for which systemd refuses the whole file'
    if SURROGATES.search(text):
        return 'contains a lone surrogate (bytes that are not UTF-8), which is not valid UTF-8 in the file'
    if NONCHARACTERS.search(text):
        return ('contains a Unicode noncharacter (U+FDD0 to U+FDEF, or U+FFFE or U+FFFF of a plane), for which '
                'systemd refuses the whole file')
    if '\ufeff' in text:
        return 'contains U+FEFF (byte order mark), which systemd.exec(5) does not allow in an environment file'
    return None


def _text(value):
    """The value as text, or None when it is of a type an environment variable cannot hold."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode('utf-8', 'surrogateescape')
    if isinstance(value, str):
        return value
    # A vaulted value: ansible-core 2.19's EncryptedString, or the older AnsibleVaultEncryptedUnicode.
    if (EncryptedString is not None and isinstance(value, EncryptedString)) or getattr(value, '__ENCRYPTED__', False):
        return str(value)
    return None


def _type_name(value):
    if value is None:
        return 'null'
    if isinstance(value, Mapping):
        return 'a dict'
    if isinstance(value, (list, tuple, set)):
        return 'a list'
    return 'of type %s' % type(value).__name__


def _variables(env, label):
    """[(name, text)] of one dict; AnsibleFilterError naming the key and the dict, never the value."""
    if env is None:
        return []
    if not isinstance(env, Mapping):
        raise AnsibleFilterError('%s must be a dict of environment variables, not %s' % (label, _type_name(env)))
    variables = []
    for name, value in env.items():
        if not isinstance(name, str):
            raise AnsibleFilterError('%s key %r is not a string: environment variable names are' % (label, name))
        if not NAME_PATTERN.match(name):
            raise AnsibleFilterError(
                '%s key %r is not a valid environment variable name (letters, digits and "_", not starting with a '
                'digit)' % (label, str(name)))
        text = _text(value)
        if text is None:
            raise AnsibleFilterError('%s key %r: the value is %s; give a string, a number or a boolean' % (
                label, str(name), _type_name(value)))
        refusal = _refusal(text)
        if refusal:
            raise AnsibleFilterError('%s key %r: the value %s' % (label, str(name), refusal))
        variables.append((str(name), text))
    return variables


def env_file(env, secret_env=None, env_name='graceful_env', secret_env_name='graceful_secret_env'):
    """The text of a systemd EnvironmentFile: ``NAME="value"`` per line, the names of both dicts sorted together."""
    public = _variables(env, env_name)
    secret = _variables(secret_env, secret_env_name)
    both = sorted(set(name for name, _text in public) & set(name for name, _text in secret))
    if both:
        raise AnsibleFilterError('%s in both %s and %s: give %s in one of them only' % (
            ', '.join(repr(name) for name in both), env_name, secret_env_name, 'it' if len(both) == 1 else 'each'))
    return ''.join('%s="%s"\n' % (name, ESCAPE.sub(r'\\\1', text)) for name, text in sorted(public + secret))


class FilterModule:
    def filters(self):
        return {'env_file': env_file}
