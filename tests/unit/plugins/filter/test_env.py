# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import os

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.wsgi.plugins.filter import env
from ansible_collections.graceful.wsgi.plugins.filter.env import env_file

SECRET = 'hunter2-never-shown'


# ---------------------------------------------------------------- systemd's reader, in Python
# parse_env_file_internal() of systemd 252 (src/basic/env-file.c), the reader of EnvironmentFile=, state by state,
# with load_env_file_push(): values that are not valid UTF-8 (noncharacters included) fail the whole file, and a
# name given twice keeps its last value. read_full_stream() (src/basic/fileio.c) refuses a file with a NUL in it.

WHITESPACE = ' \t\n\r'
NEWLINE = '\n\r'
COMMENTS = '#;'
SHELL_NEED_ESCAPE = '"\\`$'


class InvalidFile(Exception):
    """load_env_file() returns -EINVAL: systemd does not start the service."""


def utf8_is_valid(text):
    for char in text:
        code = ord(char)
        if 0xd800 <= code <= 0xdfff or 0xfdd0 <= code <= 0xfdef or code & 0xfffe == 0xfffe:
            return False
    return True


def parse_env_file(data):
    """[(name, value)] as systemd 252's load_env_file() reads ``data`` (bytes)."""
    if b'\0' in data:
        raise InvalidFile('embedded NUL')  # -EBADMSG
    text = data.decode('utf-8', 'surrogatepass')
    found = {}
    state, key, value = 'PRE_KEY', [], None
    last_key_ws = last_value_ws = None

    def push():
        name = ''.join(key[:last_key_ws] if last_key_ws is not None else key)
        got = ''.join(value or [])
        if not utf8_is_valid(name) or not utf8_is_valid(got):
            raise InvalidFile(name)
        found.pop(name, None)
        found[name] = got

    for char in text:
        if state == 'PRE_KEY':
            if char in COMMENTS:
                state = 'COMMENT'
            elif char not in WHITESPACE:
                state, key, last_key_ws = 'KEY', [char], None
        elif state == 'KEY':
            if char in NEWLINE:
                state, key = 'PRE_KEY', []
            elif char == '=':
                state, last_value_ws = 'PRE_VALUE', None
            else:
                if char not in WHITESPACE:
                    last_key_ws = None
                elif last_key_ws is None:
                    last_key_ws = len(key)
                key.append(char)
        elif state == 'PRE_VALUE':
            if char in NEWLINE:
                push()
                state, key, value = 'PRE_KEY', [], None
            elif char == "'":
                state = 'SINGLE_QUOTE_VALUE'
            elif char == '"':
                state = 'DOUBLE_QUOTE_VALUE'
            elif char == '\\':
                state = 'VALUE_ESCAPE'
            elif char not in WHITESPACE:
                state = 'VALUE'
                value = (value or []) + [char]
        elif state == 'VALUE':
            if char in NEWLINE:
                if last_value_ws is not None:
                    value = value[:last_value_ws]
                push()
                state, key, value = 'PRE_KEY', [], None
            elif char == '\\':
                state, last_value_ws = 'VALUE_ESCAPE', None
            else:
                if char not in WHITESPACE:
                    last_value_ws = None
                elif last_value_ws is None:
                    last_value_ws = len(value)
                value.append(char)
        elif state == 'VALUE_ESCAPE':
            state = 'VALUE'
            if char not in NEWLINE:
                value = (value or []) + [char]
        elif state == 'SINGLE_QUOTE_VALUE':
            if char == "'":
                state = 'PRE_VALUE'
            else:
                value = (value or []) + [char]
        elif state == 'DOUBLE_QUOTE_VALUE':
            if char == '"':
                state = 'PRE_VALUE'
            elif char == '\\':
                state = 'DOUBLE_QUOTE_VALUE_ESCAPE'
            else:
                value = (value or []) + [char]
        elif state == 'DOUBLE_QUOTE_VALUE_ESCAPE':
            state = 'DOUBLE_QUOTE_VALUE'
            if char in SHELL_NEED_ESCAPE:
                value = (value or []) + [char]
            elif char != '\n':
                value = (value or []) + ['\\', char]
        elif state == 'COMMENT':
            if char == '\\':
                state = 'COMMENT_ESCAPE'
            elif char in NEWLINE:
                state = 'PRE_KEY'
        elif state == 'COMMENT_ESCAPE':
            state = 'COMMENT'  # 252: the escaped character stays in the comment, a newline too
    if state in ('PRE_VALUE', 'VALUE', 'VALUE_ESCAPE', 'SINGLE_QUOTE_VALUE', 'DOUBLE_QUOTE_VALUE',
                 'DOUBLE_QUOTE_VALUE_ESCAPE'):
        if state == 'VALUE' and last_value_ws is not None:
            value = value[:last_value_ws]
        push()
    return list(found.items())


def round_trip(variables):
    return dict(parse_env_file(env_file(variables).encode('utf-8')))


# ---------------------------------------------------------------- systemd itself, when this host has it

LIBSYSTEMD_SHARED = '/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so'


def systemd_252():
    """load_env_file() of this host's systemd 252 (Debian 12), called through its private shared library."""
    lib = ctypes.CDLL(LIBSYSTEMD_SHARED)
    strv = ctypes.POINTER(ctypes.c_char_p)
    lib.load_env_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(strv)]
    lib.load_env_file.restype = ctypes.c_int
    lib.env_assignment_is_valid.argtypes = [ctypes.c_char_p]
    lib.env_assignment_is_valid.restype = ctypes.c_bool
    lib.strv_free.argtypes = [strv]
    lib.strv_free.restype = ctypes.c_void_p

    def load(path):
        got = strv()
        if lib.load_env_file(None, str(path).encode(), ctypes.byref(got)) < 0:
            raise InvalidFile(str(path))
        assignments = []
        index = 0
        while got and got[index] is not None:
            assignments.append(got[index])
            index += 1
        lib.strv_free(got)
        # exec_context_load_environment() drops what strv_env_clean() finds invalid: none may be.
        assert all(lib.env_assignment_is_valid(item) for item in assignments)
        return [tuple(item.decode('utf-8').split('=', 1)) for item in assignments]
    return load


needs_systemd = pytest.mark.skipif(not os.path.exists(LIBSYSTEMD_SHARED), reason='no systemd 252 library here')

VALUES = {
    'SPACES': '  two  leading, two trailing  ',
    'QUOTES': 'say "hi" and \'bye\'',
    'DOLLAR_HOME': '$HOME',
    'DOLLAR_BRACES': '${X} and ${X:-default} and $$',
    'PERCENT': '%s %% %n %h %i',
    'BACKSLASHES': 'C:\\path\\ \\\\ \\n \\t \\" \\$ \\`',
    'BACKSLASH_NEWLINE': 'line\\\ncontinued?',
    'ENDS_WITH_BACKSLASH': 'trailing\\',
    'BACKTICKS': '`id` $(id)',
    'TABS': '\tone\ttab\t',
    'UNICODE': 'Grüße, 日本, emoji \U0001f600, U+FFFD \ufffd',
    'NEWLINES': 'first line\nsecond line\n\nafter an empty one\n',
    'CARRIAGE_RETURN': 'windows\r\nline\r',
    'CONTROL': 'bell \x07 escape \x1b delete \x7f',
    'HASH': '# not a comment ; nor this',
    'EQUALS': 'a=b==c',
    'EMPTY': '',
    'ONLY_SPACES': '   ',
    'QUOTE_ONLY': '"',
    'SINGLE_QUOTE_ONLY': "'",
}


# ---------------------------------------------------------------- the filter

def test_every_tricky_value_round_trips_through_systemds_rules():
    assert round_trip(VALUES) == VALUES


@pytest.mark.parametrize('name', sorted(VALUES))
def test_each_value_alone_round_trips(name):
    assert round_trip({name: VALUES[name]}) == {name: VALUES[name]}


@needs_systemd
def test_every_tricky_value_round_trips_through_systemd_252_itself(tmp_path):
    path = tmp_path / 'env'
    path.write_bytes(env_file(VALUES, {'SECRET_KEY': SECRET}).encode('utf-8'))
    assert dict(systemd_252()(path)) == dict(VALUES, SECRET_KEY=SECRET)


@needs_systemd
@pytest.mark.parametrize('data', [
    b'A=x\r\nB=y\n', b'A="x"y z\n', b'A= "x" \n', b'A=\'a "b" \\c\'\n', b'A=un\\\nquoted  \n', b'A="a\\\nb"\n',
    b'A="\\\\\nb"\n', b'A="\\a\\n"\n', b'# comment \\\nA=1\nB=2\n', b' KEY  =  v  \n', b'A=1\nA=2\n', b'A\nB=\n',
    b'A="unterminated', b'A="x\xef\xbf\xbey"\n', b'A=1\0B=2\n',
])
def test_the_python_reader_agrees_with_systemd_252(tmp_path, data):
    path = tmp_path / 'env'
    path.write_bytes(data)
    try:
        expected = systemd_252()(path)
    except InvalidFile:
        with pytest.raises(InvalidFile):
            parse_env_file(data)
        return
    assert parse_env_file(data) == expected


def test_lines_are_sorted_by_name_with_the_secret_names_among_the_others():
    text = env_file({'ZED': 'z', 'ALPHA': 'a'}, {'MIDDLE': SECRET})
    assert text == 'ALPHA="a"\nMIDDLE="%s"\nZED="z"\n' % SECRET


def test_exactly_the_four_characters_are_escaped():
    assert env_file({'A': 'x"y\\z`w$v%u\'t\nnew'}) == 'A="x\\"y\\\\z\\`w\\$v%u\'t\nnew"\n'


def test_the_documented_example():
    assert env_file({'DJANGO_DEBUG': False, 'GREETING': 'say "hi" to $USER'}, {'SECRET_KEY': 's3cr%t'}) == (
        'DJANGO_DEBUG="false"\nGREETING="say \\"hi\\" to \\$USER"\nSECRET_KEY="s3cr%t"\n')


def test_booleans_are_lower_case_and_numbers_as_python_writes_them():
    assert round_trip({'YES': True, 'NO': False, 'INT': 3, 'NEGATIVE': -7, 'FLOAT': 0.5, 'BIG': 10 ** 20}) == {
        'YES': 'true', 'NO': 'false', 'INT': '3', 'NEGATIVE': '-7', 'FLOAT': '0.5', 'BIG': '100000000000000000000'}


def test_empty_or_null_dicts_give_an_empty_file():
    assert env_file({}) == '' and env_file(None, None) == '' and env_file({}, {}) == ''
    assert env_file(None, {'A': '1'}) == 'A="1"\n'


def test_bytes_and_vaulted_values_are_taken_as_their_text():
    class Vaulted(object):
        """What ansible-core 2.17 and 2.18 hand a filter for a !vault value: not a str, decrypted by str()."""
        __ENCRYPTED__ = True

        def __str__(self):
            return SECRET

    assert round_trip({'RAW': 'é'.encode('utf-8')}) == {'RAW': 'é'}
    assert env_file({}, {'TOKEN': Vaulted()}) == 'TOKEN="%s"\n' % SECRET


@pytest.mark.parametrize('name', ['BAD-NAME', '1ST', '', 'A B', 'A=B', 'NAME\n', 'ÄRGER', 'A.B'])
def test_an_invalid_name_is_refused_naming_the_key_and_its_dict(name):
    with pytest.raises(AnsibleFilterError) as caught:
        env_file({'GOOD': 'x', name: SECRET})
    assert str(caught.value).startswith('graceful_env key %r is not a valid environment variable name' % name)
    assert SECRET not in str(caught.value)
    with pytest.raises(AnsibleFilterError) as caught:
        env_file({}, {name: SECRET})
    assert str(caught.value).startswith('graceful_secret_env key %r is not a valid' % name)
    assert SECRET not in str(caught.value)


def test_the_documented_message_for_an_invalid_name():
    with pytest.raises(AnsibleFilterError) as caught:
        env_file({'BAD-NAME': SECRET})
    assert str(caught.value) == ("graceful_env key 'BAD-NAME' is not a valid environment variable name (letters, "
                                 "digits and \"_\", not starting with a digit)")


def test_a_name_that_is_not_a_string_is_refused():
    with pytest.raises(AnsibleFilterError, match=r"^graceful_env key 1 is not a string"):
        env_file({1: SECRET})


@pytest.mark.parametrize('value, what', [
    (None, 'null'),
    ({'nested': SECRET}, 'a dict'),
    ([SECRET], 'a list'),
    ((SECRET,), 'a list'),
    (object(), 'of type object'),
])
def test_a_value_of_another_type_is_refused_without_quoting_it(value, what):
    with pytest.raises(AnsibleFilterError) as caught:
        env_file({}, {'TOKEN': value})
    assert str(caught.value) == ("graceful_secret_env key 'TOKEN': the value is %s; give a string, a number or a "
                                 "boolean" % what)


@pytest.mark.parametrize('bad, why', [
    ('\x00', 'contains a NUL character'),
    ('\ufffe', 'contains a Unicode noncharacter'),
    ('\uffff', 'contains a Unicode noncharacter'),
    ('\ufdd0', 'contains a Unicode noncharacter'),
    ('\ufdef', 'contains a Unicode noncharacter'),
    ('\U0001fffe', 'contains a Unicode noncharacter'),
    ('\U0010ffff', 'contains a Unicode noncharacter'),
    ('\udcff', 'contains a lone surrogate'),
    (b'\xff', 'contains a lone surrogate'),
    ('\ufeff', 'contains U+FEFF'),
])
def test_a_value_systemd_cannot_take_is_refused_without_quoting_it(bad, why):
    value = SECRET.encode() + bad + SECRET.encode() if isinstance(bad, bytes) else SECRET + bad + SECRET
    for args, label in (((({'TOKEN': value}),), 'graceful_env'), (({}, {'TOKEN': value}), 'graceful_secret_env')):
        with pytest.raises(AnsibleFilterError) as caught:
            env_file(*args)
        assert str(caught.value).startswith("%s key 'TOKEN': the value %s" % (label, why))
        assert SECRET not in str(caught.value) and 'hunter' not in str(caught.value)


@pytest.mark.parametrize('fine', ['\ufdcf', '\ufdf0', '\ufffd', '\U0010fffd', '\x01\x1b\x7f\r'])
def test_characters_next_to_the_refused_ones_pass(fine):
    assert round_trip({'A': fine}) == {'A': fine}


def test_a_name_in_both_dicts_is_ambiguous():
    with pytest.raises(AnsibleFilterError) as caught:
        env_file({'TOKEN': 'public-' + SECRET, 'B': '1'}, {'TOKEN': SECRET, 'B': SECRET})
    assert str(caught.value) == ("'B', 'TOKEN' in both graceful_env and graceful_secret_env: give each in one of them "
                                 "only")
    with pytest.raises(AnsibleFilterError, match=r"^'B' in both graceful_env and graceful_secret_env: give it in one"):
        env_file({'B': '1'}, {'B': '1'})


def test_a_dict_that_is_not_a_dict_is_refused():
    with pytest.raises(AnsibleFilterError, match=r'^graceful_secret_env must be a dict of environment variables, '
                                                 r'not a list$'):
        env_file({}, [SECRET])
    with pytest.raises(AnsibleFilterError, match=r'^graceful_env must be a dict of environment variables, not of '
                                                 r'type str$'):
        env_file(SECRET)


def test_messages_name_the_dicts_as_told():
    with pytest.raises(AnsibleFilterError, match=r"^app_env key 'X-Y' is not"):
        env_file({'X-Y': 1}, env_name='app_env')
    with pytest.raises(AnsibleFilterError, match=r"^'A' in both app_env and vault_env"):
        env_file({'A': 1}, {'A': 2}, env_name='app_env', secret_env_name='vault_env')


def test_the_filter_is_registered():
    assert env.FilterModule().filters() == {'env_file': env_file}
