# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# The one check of every name that becomes a path, a unit or a config file name (an app, a release id, a service):
# root builds /srv/<app>/releases/<release>, <service>.service and the load balancer's files from them, so a name
# must be one harmless path component. Each test is documented in a file of its name beside this one.

import re

from ansible.module_utils.six import integer_types, string_types

# \A and \Z: Python's $ also matches before a trailing newline, which is how 'v1\n' passed the match test. A first
# letter or digit keeps out '.', '..', hidden names and names read as options ('-rf'); the lookahead keeps out '..'
# anywhere. 64 characters: a unit name, a user name and a file name all fit.
NAME = re.compile(r'\A(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z')


def _text(value):
    """A name as text: strings, and integers (a release id 2 written in YAML); nothing else is a name."""
    if isinstance(value, bool):
        return None
    if isinstance(value, integer_types):
        return str(value)
    if isinstance(value, string_types):
        return value
    return None


def safe_name(value):
    """Whether ``value`` is a name that can become one path component, a unit name or a config file name."""
    text = _text(value)
    return text is not None and NAME.match(text) is not None


def safe_abspath(value):
    """Whether ``value`` is an absolute path made of safe names (an app's root such as /srv/shop): no '..', no
    whitespace, no trailing or doubled '/', and not '/' itself."""
    text = _text(value)
    return bool(text and text.startswith('/') and all(safe_name(part) for part in text[1:].split('/')))


class TestModule:
    def tests(self):
        return {'safe_name': safe_name, 'safe_abspath': safe_abspath}
