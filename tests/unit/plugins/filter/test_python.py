# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.wsgi.plugins.filter.python import python_literal, python_settings

ROUND_TRIP = [
    None, True, False, 0, -3, 2 ** 70, 0.5, 1e-300, '', 'plain', 'quote \' and " and \\ and\nnewline',
    'caf\u00e9 \U0001f600 \u2028', ['127.0.0.1:8000', '[::1]:8000'], {'a': [1, None], 'b': {'c': True}}, [],
]


@pytest.mark.parametrize('value', ROUND_TRIP, ids=repr)
def test_a_literal_reads_back_as_the_same_value_and_is_ascii(value):
    text = python_literal(value)
    assert text.isascii()
    assert ast.literal_eval(text) == value


def test_json_names_never_appear():
    assert python_literal({'reuse_port': True, 'x': None, 'y': False}) == "{'reuse_port': True, 'x': None, 'y': False}"


def test_an_astral_character_stays_one_character():
    # JSON would write the surrogate pair \ud83d\ude00, which Python reads as two lone surrogates.
    assert ast.literal_eval(python_literal('\U0001f600')) == '\U0001f600'


@pytest.mark.parametrize('value, fragment', [
    (float('nan'), 'no Python literal'),
    (float('inf'), 'no Python literal'),
    (b'raw', 'bytes are not a configuration value'),
    ({1.5: 'x'}, 'a key of type float'),
    ({'a': [object()]}, "gunicorn_x['a'][0]: a value of type object"),
])
def test_values_without_a_literal_fail_naming_where(value, fragment):
    with pytest.raises(AnsibleFilterError) as exc:
        python_literal(value, 'gunicorn_x')
    assert fragment in str(exc.value)


def test_settings_are_sorted_lines_that_python_executes():
    text = python_settings({'reuse_port': True, 'forwarded_allow_ips': '*', 'limit_request_line': 0,
                            'x_forwarded_for_header': None})
    assert text == ("forwarded_allow_ips = '*'\nlimit_request_line = 0\nreuse_port = True\n"
                    "x_forwarded_for_header = None\n")
    namespace = {}
    exec(compile(text, 'gunicorn.conf.py', 'exec'), namespace)  # pylint: disable=exec-used
    assert namespace['reuse_port'] is True and namespace['x_forwarded_for_header'] is None


@pytest.mark.parametrize('settings', [None, {}])
def test_no_settings_give_no_lines(settings):
    assert python_settings(settings) == ''


@pytest.mark.parametrize('name', ['import os; os.system("id")#', 'Reuse', '1st', 'a-b', 'a b', 'a\n', ''])
def test_a_name_that_is_no_setting_is_refused_and_named(name):
    with pytest.raises(AnsibleFilterError) as exc:
        python_settings({name: 1}, 'gunicorn_extra_settings')
    assert str(exc.value).startswith('gunicorn_extra_settings: %s is not a setting name' % ascii(name))


def test_settings_must_be_a_dict():
    with pytest.raises(AnsibleFilterError, match='gunicorn_extra_settings must be a dict'):
        python_settings(['reuse_port'], 'gunicorn_extra_settings')
