# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""playbooks/awx_survey.json: in step with the rollout role's argument specs, valid for AWX, and read by the roles
as AWX passes it (a multiple choice answer is a string)."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
_SPEC = importlib.util.spec_from_file_location('awx_survey', ROOT / 'tests' / 'publish' / 'awx_survey.py')
awx_survey = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(awx_survey)

with (ROOT / 'roles' / 'rollout' / 'meta' / 'argument_specs.yml').open() as _handle:
    ARGUMENT_SPECS = yaml.safe_load(_handle)
OPTIONS = ARGUMENT_SPECS['argument_specs']['start']['options']
SURVEY = json.loads((ROOT / 'playbooks' / 'awx_survey.json').read_text())
QUESTIONS = dict((item['variable'], item) for item in SURVEY['spec'])

# awx/main/constants.py SURVEY_TYPE_MAPPING: the question types and the Python type of their default.
AWX_TYPES = {'text': str, 'textarea': str, 'password': str, 'multiplechoice': str, 'multiselect': str,
             'integer': int, 'float': (float, int)}


def awx_spec_errors(survey):
    """What AWX's API (JobTemplateSurveySpec._validate_spec_data) refuses in a survey spec."""
    errors = []
    for field, kind in (('name', str), ('description', str), ('spec', list)):
        if not isinstance(survey.get(field), kind):
            errors.append('%s: missing or not a %s' % (field, kind.__name__))
    if errors:
        return errors
    if not survey['spec']:
        errors.append("'spec' doesn't contain any items")
    seen = set()
    for index, item in enumerate(survey['spec']):
        for field, kind in (('type', str), ('question_name', str), ('variable', str), ('required', bool)):
            if not isinstance(item.get(field), kind):
                errors.append('question %d: %s missing or not a %s' % (index, field, kind.__name__))
        if item.get('variable') in seen:
            errors.append('question %d: variable %s twice' % (index, item.get('variable')))
        seen.add(item.get('variable'))
        kind = item.get('type')
        if kind not in AWX_TYPES:
            errors.append('question %d: type %r' % (index, kind))
            continue
        if 'default' in item and item['default'] != '' and (
                isinstance(item['default'], bool) or not isinstance(item['default'], AWX_TYPES[kind])):
            errors.append('question %d: default %r is no %s' % (index, item['default'], kind))
        for bound in ('min', 'max'):
            if bound in item and item[bound] is not None and not isinstance(item[bound], int):
                errors.append('question %d: %s %r is not an integer' % (index, bound, item[bound]))
        if kind in ('multiplechoice', 'multiselect'):
            if 'choices' not in item:
                errors.append('question %d: no choices' % index)
            elif 'default' in item and item['default'] not in item['choices']:
                errors.append('question %d: default %r not among the choices' % (index, item['default']))
        if isinstance(item.get('default'), str) and item['default'].startswith('$encrypted$'):
            errors.append('question %d: $encrypted$ default' % index)
    return errors


def awx_answer_errors(item, value):
    """What AWX's launch check (SurveyJobTemplateMixin._survey_element_validation) refuses in one answer. AWX passes
    a question's default to the playbook only when the default passes it."""
    kind, bounds = item['type'], (item.get('min'), item.get('max'))
    if kind in ('text', 'textarea', 'password'):
        if not isinstance(value, str):
            return ['not a string']
        measure = len(value)
    elif kind == 'integer':
        if isinstance(value, bool) or not isinstance(value, int):
            return ['not an integer']
        measure = value
    elif kind == 'float':
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return ['not a number']
        measure = value
    else:
        return [] if value in item['choices'] else ['not one of %s' % item['choices']]
    errors = []
    if bounds[0] not in ('', None) and measure < bounds[0]:
        errors.append('below min %s' % bounds[0])
    if bounds[1] not in ('', None) and measure > bounds[1]:
        errors.append('above max %s' % bounds[1])
    return errors


# ---------------------------------------------------------------- the real survey

def test_the_survey_file_is_what_the_argument_specs_give():
    assert (ROOT / 'playbooks' / 'awx_survey.json').read_text() == awx_survey.render(
        awx_survey.survey_from_argument_specs(ARGUMENT_SPECS)), (
        'playbooks/awx_survey.json is stale: run .venv/bin/python tests/publish/awx_survey.py')


def test_check_mode_passes_on_the_file_and_shows_what_a_stale_one_lacks(tmp_path, monkeypatch, capsys):
    assert awx_survey.main(['--check']) == 0
    stale = tmp_path / 'awx_survey.json'
    stale.write_text(json.dumps(dict(SURVEY, spec=SURVEY['spec'][1:]), indent=2) + '\n')
    monkeypatch.setattr(awx_survey, 'SURVEY', stale)
    monkeypatch.setattr(awx_survey, 'ROOT', tmp_path)
    assert awx_survey.main(['--check']) == 1
    out = capsys.readouterr().out
    assert '+      "variable": "graceful_app",' in out
    assert 'awx_survey.json is stale' in out
    assert json.loads(stale.read_text())['spec'] == SURVEY['spec'][1:], '--check must not write'


def test_awx_api_and_launch_checks_accept_the_survey_and_its_defaults():
    assert awx_spec_errors(SURVEY) == []
    refused = dict((item['variable'], awx_answer_errors(item, item['default']))
                   for item in SURVEY['spec'] if 'default' in item)
    assert dict((name, errors) for name, errors in refused.items() if errors) == {}


def test_every_option_is_a_question_or_named_in_the_description_as_a_dict_list_or_exclusion():
    for name, option in OPTIONS.items():
        kind = option.get('type', 'str')
        if name in QUESTIONS:
            assert kind not in ('dict', 'list') and name not in awx_survey.EXCLUDED, name
        elif name in awx_survey.EXCLUDED:
            assert '%s (%s)' % (name, awx_survey.EXCLUDED[name]) in SURVEY['description']
        else:
            assert kind in ('dict', 'list'), '%s (%s) is neither a question nor excluded' % (name, kind)
            assert '%s (%s)' % (name, kind) in SURVEY['description']
    assert set(QUESTIONS) <= set(OPTIONS)


def test_the_playbooks_set_rollout_action_and_the_inventory_each_hosts_upstream_address():
    assert set(awx_survey.EXCLUDED) == {'rollout_action', 'graceful_upstream_address'}
    assert not set(awx_survey.EXCLUDED) & set(QUESTIONS)


def test_known_questions():
    assert QUESTIONS['graceful_server'] == dict(
        QUESTIONS['graceful_server'], type='multiplechoice', choices=['uwsgi', 'gunicorn'], default='uwsgi',
        required=False)
    assert QUESTIONS['graceful_lb']['choices'] == ['nginx', 'haproxy', 'none']
    # raw: a number of hosts or a percentage, a string either way.
    assert (QUESTIONS['graceful_serial']['type'], QUESTIONS['graceful_serial']['default']) == ('text', '34%')
    assert (QUESTIONS['graceful_health_timeout']['type'], QUESTIONS['graceful_health_timeout']['default']) == (
        'integer', 60)
    assert QUESTIONS['graceful_rollback_on_failure'] == dict(
        QUESTIONS['graceful_rollback_on_failure'], type='multiplechoice', choices=['true', 'false'], default='true')
    assert QUESTIONS['graceful_break_lock']['default'] == 'false'
    assert QUESTIONS['graceful_app']['required'] is True
    assert [name for name, item in QUESTIONS.items() if item['required']] == ['graceful_app']
    assert QUESTIONS['graceful_app']['question_description'] == (
        'Name of the app; names its directory, user, service, lock and load balancer entries.')


def test_a_blank_answer_passes_nothing_where_blank_is_not_the_default():
    # AWX passes a blank optional text answer as '' when its min is 0, and nothing when min is 1.
    assert 'default' not in QUESTIONS['graceful_app_root'], '/srv/<graceful_app> is no value to pass'
    assert QUESTIONS['graceful_app_root']['min'] == 1
    assert QUESTIONS['graceful_app_root']['question_description'].endswith('Default: /srv/<graceful_app>.')
    assert ('default' not in QUESTIONS['graceful_src'], QUESTIONS['graceful_src']['min']) == (True, 1)
    assert (QUESTIONS['graceful_release']['default'], QUESTIONS['graceful_release']['min']) == ('', 0)
    assert QUESTIONS['graceful_callable']['min'] == 1


def test_descriptions_are_plain_first_sentences():
    for item in SURVEY['spec']:
        text = item['question_description']
        assert text and not any(mark + '(' in text for mark in ('C', 'O', 'V', 'P', 'I', 'B', 'L')), item['variable']
    assert QUESTIONS['graceful_rollback_on_failure']['question_description'].endswith('verified and re-enabled.')
    assert QUESTIONS['graceful_gunicorn_package']['question_description'] == (
        "Requirement specifier of gunicorn, installed into every release's venv when graceful_server=gunicorn.")


# ---------------------------------------------------------------- the roles read the answers as AWX passes them

def test_true_and_false_answers_reach_the_rollout_role_as_booleans(tmp_path):
    """AWX passes a multiple choice answer as the string 'true' or 'false'; the role must read it as the boolean,
    not as a non-empty (true) string."""
    bool_questions = sorted(name for name, item in QUESTIONS.items() if item.get('choices') == ['true', 'false'])
    assert bool_questions == ['graceful_break_lock', 'graceful_rollback_on_failure']
    tasks = []
    for name in bool_questions:
        for answer in ('true', 'false'):
            tasks.append({
                'name': '%s=%s' % (name, answer),
                'ansible.builtin.copy': {
                    'content': '{{ {"value": %s} | to_json }}' % name.replace('graceful_', 'rollout_', 1),
                    'dest': str(tmp_path / ('%s-%s.json' % (name, answer))), 'mode': '0600'},
                'vars': {name: answer},
            })
    playbook = tmp_path / 'answers.yml'
    playbook.write_text(yaml.safe_dump([{
        'hosts': 'localhost', 'gather_facts': False, 'tasks': tasks,
        'vars': {'ansible_python_interpreter': sys.executable},
        'vars_files': [str(ROOT / 'roles' / 'rollout' / 'defaults' / 'main.yml')]}]))
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_NOCOLOR='true')
    run = subprocess.run([str(Path(sys.executable).parent / 'ansible-playbook'), '-i', 'localhost,', '-c', 'local',
                          str(playbook)], cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    read = dict(('%s=%s' % (name, answer),
                 json.loads((tmp_path / ('%s-%s.json' % (name, answer))).read_text())['value'])
                for name in bool_questions for answer in ('true', 'false'))
    wrong = dict((key, value) for key, value in read.items() if value is not (key.endswith('=true')))
    assert wrong == {}, (
        'the survey answers these as strings; the role reads them as given (roles/rollout/defaults/main.yml needs '
        '| bool): %s' % wrong)


# ---------------------------------------------------------------- the mapping, on small specs

def fake_specs(**options):
    return {'argument_specs': {'start': {'options': options}}}


def only_question(option, name='graceful_thing'):
    survey = awx_survey.survey_from_argument_specs(fake_specs(**{name: option}), excluded={})
    assert len(survey['spec']) == 1
    return survey['spec'][0]


def test_str_is_text_with_its_default_and_min_1():
    assert only_question({'type': 'str', 'default': 'abc', 'description': 'A thing. More.'}) == {
        'question_name': 'Thing', 'question_description': 'A thing.', 'required': False, 'type': 'text',
        'variable': 'graceful_thing', 'default': 'abc', 'min': 1, 'max': None}


def test_str_defaulting_to_blank_takes_a_blank_answer():
    assert only_question({'type': 'str', 'default': ''})['min'] == 0


def test_a_type_less_option_is_a_str():
    assert only_question({'description': 'x'})['type'] == 'text'


def test_no_log_str_is_a_password_without_its_default():
    item = only_question({'type': 'str', 'no_log': True, 'default': 'hunter2'})
    assert item['type'] == 'password'
    assert 'default' not in item and 'hunter2' not in json.dumps(item)


def test_str_with_choices_is_multiplechoice():
    item = only_question({'type': 'str', 'choices': ['a', 'b'], 'default': 'b'})
    assert (item['type'], item['choices'], item['default'], item['min']) == ('multiplechoice', ['a', 'b'], 'b', None)


def test_a_default_outside_the_choices_is_refused_naming_the_option():
    with pytest.raises(ValueError, match='graceful_thing: default .c. is not one of its choices'):
        only_question({'type': 'str', 'choices': ['a', 'b'], 'default': 'c'})


def test_int_and_float_are_numbers_with_their_defaults():
    item = only_question({'type': 'int', 'default': 7})
    assert (item['type'], item['default']) == ('integer', 7)
    item = only_question({'type': 'float', 'default': 0.5})
    assert (item['type'], item['default'], item['min'], item['max']) == ('float', 0.5, None, None)


def test_a_number_default_of_the_wrong_type_is_refused():
    for option in ({'type': 'int', 'default': '7'}, {'type': 'int', 'default': True}, {'type': 'int', 'default': 1.5}):
        with pytest.raises(ValueError, match='graceful_thing: default'):
            only_question(option)


def test_bool_is_a_true_false_choice():
    item = only_question({'type': 'bool', 'default': False})
    assert (item['type'], item['choices'], item['default']) == ('multiplechoice', ['true', 'false'], 'false')
    assert 'default' not in only_question({'type': 'bool'})


def test_raw_and_path_are_text():
    assert only_question({'type': 'raw', 'default': 2})['default'] == '2'
    assert only_question({'type': 'path', 'default': '/srv/x'})['type'] == 'text'


def test_a_placeholder_default_is_not_passed_but_named():
    item = only_question({'type': 'path', 'default': '/srv/<graceful_app>', 'description': 'Where.'})
    assert 'default' not in item
    assert item['question_description'] == 'Where. Default: /srv/<graceful_app>.'


def test_required_only_without_a_default():
    assert only_question({'type': 'str', 'required': True})['required'] is True
    assert only_question({'type': 'str', 'required': True, 'default': 'x'})['required'] is False


def test_dict_and_list_are_named_in_the_description_not_asked():
    survey = awx_survey.survey_from_argument_specs(fake_specs(
        graceful_a={'type': 'dict'}, graceful_b={'type': 'list', 'elements': 'str'}, graceful_c={'type': 'int'}),
        excluded={})
    assert [item['variable'] for item in survey['spec']] == ['graceful_c']
    assert 'graceful_a (dict), graceful_b (list)' in survey['description']


def test_an_exclusion_is_named_with_its_reason_and_a_stale_one_is_refused():
    survey = awx_survey.survey_from_argument_specs(
        fake_specs(graceful_a={'type': 'str'}, graceful_b={'type': 'str'}), excluded={'graceful_a': 'why'})
    assert [item['variable'] for item in survey['spec']] == ['graceful_b']
    assert 'graceful_a (why)' in survey['description']
    with pytest.raises(ValueError, match='graceful_gone'):
        awx_survey.survey_from_argument_specs(fake_specs(graceful_a={'type': 'str'}), excluded={'graceful_gone': 'x'})


def test_a_type_without_an_answer_is_refused_naming_it():
    with pytest.raises(ValueError, match='graceful_thing: type bytes'):
        only_question({'type': 'bytes'})


def test_a_missing_entry_point_is_refused():
    with pytest.raises(ValueError, match="entry point 'start'"):
        awx_survey.survey_from_argument_specs({'argument_specs': {'main': {'options': {}}}})


def test_markup_goes_and_the_first_sentence_stays():
    description = textwrap.dedent('''\
        Use C(app:app) with O(graceful_server=gunicorn), V(true), P(graceful.wsgi.safe_name#test) and
        L(the docs,https://example.org/x). V(false) starts the second sentence.''')
    assert awx_survey.first_sentence([description, 'Another paragraph.']) == (
        'Use app:app with graceful_server=gunicorn, true, graceful.wsgi.safe_name and the docs.')
    assert awx_survey.first_sentence('Keep (C(.tar.gz), C(.zip)) archives. 0 keeps all.') == (
        'Keep (.tar.gz, .zip) archives.')
    assert awx_survey.first_sentence(None) == ''


def test_question_names_spell_out_the_option():
    assert awx_survey.question_name('graceful_lb_group') == 'Load balancer group'
    assert awx_survey.question_name('graceful_src_version') == 'Source version'
    assert awx_survey.question_name('other') == 'Other'
