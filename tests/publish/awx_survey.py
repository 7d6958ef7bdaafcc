"""Write playbooks/awx_survey.json, the AWX survey of the deploy, rollback and reload playbooks.

The questions come from the graceful_* contract, roles/rollout/meta/argument_specs.yml, entry point ``start``;
``--check`` exits 1 and shows the difference when the file is not what the argument specs give.

    .venv/bin/python tests/publish/awx_survey.py [--check]

The spec is the one AWX's API validates (awx/api/views JobTemplateSurveySpec._validate_spec_data) and checks
answers against at launch (awx/main/models/mixins.py SurveyJobTemplateMixin._survey_element_validation):
``type`` one of text, textarea, password, integer, float, multiplechoice, multiselect; ``question_name``,
``variable`` strings and ``required`` a boolean; a default of the question's type; ``min`` and ``max`` integers
or null (for text, lengths); ``choices`` for the choice types. AWX limits the length of none of the texts.

An answer is a string or a number, so dict and list options are no questions: they belong in the inventory or in
the job template's extra variables, and the survey's description names them. So do the options left out on
purpose: EXCLUDED below.
"""

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ARGUMENT_SPECS = ROOT / 'roles' / 'rollout' / 'meta' / 'argument_specs.yml'
SURVEY = ROOT / 'playbooks' / 'awx_survey.json'
ENTRY_POINT = 'start'
PREFIX = 'graceful_'

# Options that are no survey question although a string could answer them, and why.
EXCLUDED = {
    # Extra variables outrank the playbooks' own vars: an answer would turn the rollback template into a deploy.
    'rollout_action': 'set by deploy.yml, rollback.yml and reload.yml',
    # A survey answer is an extra variable, the same for every host: each load balancer entry would get one address.
    'graceful_upstream_address': 'per host, in the inventory',
}

# Words of option names spelled out in the question names.
WORDS = {'lb': 'load balancer', 'src': 'source'}

# ansible-doc's markup: C(), O(), V(), P(), I(), B(), E(), M(), U(), RV(); L(text,url) keeps its text.
MARKUP = re.compile(r'\b(?:C|O|V|P|I|B|E|M|U|RV)\(([^()]*)\)')
LINK = re.compile(r'\bL\(([^(),]*),[^()]*\)')
PLUGIN_TYPE = re.compile(r'#[a-z_]+\Z')
SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=[A-Z0-9])')
# A default written as a template of other options ("/srv/<graceful_app>") is no value AWX can pass.
PLACEHOLDER = re.compile(r'<[A-Za-z0-9_]+>')

TEXT_TYPES = ('str', 'path', 'raw')
NUMBER_TYPES = {'int': 'integer', 'float': 'float'}
NOT_A_STRING = ('dict', 'list')


def plain_text(text):
    """ansible-doc markup out, whitespace folded: C(app:app) is app:app, P(ns.coll.name#test) is ns.coll.name."""
    text = LINK.sub(r'\1', text)
    text = MARKUP.sub(lambda match: PLUGIN_TYPE.sub('', match.group(1)), text)
    return ' '.join(text.split())


def first_sentence(description):
    """The first sentence of an option's description (a string or a list of paragraphs), as plain text. Cut before
    the markup goes: a sentence may start with V(false)."""
    if isinstance(description, list):
        description = description[0] if description else ''
    return plain_text(SENTENCE_END.split(' '.join((description or '').split()), 1)[0])


def question_name(variable):
    """graceful_lb_group -> 'Load balancer group'."""
    words = variable[len(PREFIX):] if variable.startswith(PREFIX) else variable
    text = ' '.join(WORDS.get(word, word) for word in words.split('_'))
    return text[:1].upper() + text[1:]


def _text_default(name, default):
    if default is None or (isinstance(default, str) and PLACEHOLDER.search(default)):
        return None
    if isinstance(default, bool) or not isinstance(default, (str, int, float)):
        raise ValueError('%s: a default of %r cannot be a text answer' % (name, default))
    return str(default)


def question(name, option):
    """The survey question of one option (an argument spec entry). ValueError for a dict or list option, or a type
    the survey has no answer for."""
    kind = option.get('type', 'str')
    default = option.get('default')
    description = first_sentence(option.get('description'))
    choices = None
    bounds = (None, None)
    if kind in NOT_A_STRING:
        raise ValueError('%s: a %s is no survey answer' % (name, kind))
    if kind == 'bool':
        if default is not None and not isinstance(default, bool):
            raise ValueError('%s: bool default %r is not true or false' % (name, default))
        survey_type, choices = 'multiplechoice', ['true', 'false']
        value = None if default is None else ('true' if default else 'false')
    elif kind in NUMBER_TYPES:
        if option.get('choices'):
            raise ValueError('%s: a %s with choices has no survey question' % (name, kind))
        if default is not None and (isinstance(default, bool) or not isinstance(default, (int, float))
                                    or (kind == 'int' and not isinstance(default, int))):
            raise ValueError('%s: default %r is not a %s' % (name, default, kind))
        survey_type, value = NUMBER_TYPES[kind], default
    elif kind in TEXT_TYPES:
        value = _text_default(name, default)
        if value is None and isinstance(default, str):
            description = '%s Default: %s.' % (description, default)
        if option.get('choices'):
            choices = [str(choice) for choice in option['choices']]
            if value is not None and value not in choices:
                raise ValueError('%s: default %r is not one of its choices %s' % (name, value, choices))
            survey_type = 'multiplechoice'
        else:
            survey_type = 'password' if option.get('no_log') else 'text'
            # A blank answer to a text question with min 0 reaches the playbook as ''; with min 1 it is not passed,
            # and the role's own default applies. '' is passed only where it is the option's default anyway.
            bounds = (0 if default == '' else 1, None)
            if survey_type == 'password':
                # A secret's default has no place in a file; AWX would store it encrypted, this file would not.
                value = None
    else:
        raise ValueError('%s: type %s has no survey question' % (name, kind))
    item = {
        'question_name': question_name(name),
        'question_description': description,
        'required': bool(option.get('required', False)) and 'default' not in option,
        'type': survey_type,
        'variable': name,
    }
    if value is not None:
        item['default'] = value
    if choices is not None:
        item['choices'] = choices
    item['min'], item['max'] = bounds
    return item


def survey_from_argument_specs(specs, entry_point=ENTRY_POINT, excluded=None):
    """The AWX survey spec ({name, description, spec}) of an entry point of a role's argument specs (the loaded
    argument_specs.yml). ``excluded`` maps options left out on purpose to why (default EXCLUDED)."""
    excluded = EXCLUDED if excluded is None else excluded
    try:
        options = specs['argument_specs'][entry_point]['options']
    except (KeyError, TypeError):
        raise ValueError('the argument specs have no options for entry point %r' % entry_point)
    questions, left_out, structured = [], [], []
    for name, option in options.items():
        kind = option.get('type', 'str')
        if name in excluded:
            left_out.append('%s (%s)' % (name, excluded[name]))
        elif kind in NOT_A_STRING:
            structured.append('%s (%s)' % (name, kind))
        else:
            questions.append(question(name, option))
    unknown = sorted(set(excluded) - set(options))
    if unknown:
        raise ValueError('the exclusions name options the argument specs do not have: %s' % ', '.join(unknown))
    description = 'Launch answers of the graceful.wsgi deploy, rollback and reload playbooks (the graceful_* contract).'
    if left_out or structured:
        description += ' Not asked: %s.' % ', '.join(
            left_out + (['the dicts and lists, which no survey answer can be: ' + ', '.join(structured)
                         + '; set them in the inventory or the job template\'s extra variables'
                         + ' (secrets through a credential)'] if structured else []))
    return {'name': 'graceful.wsgi rollout', 'description': description, 'spec': questions}


def render(survey):
    return json.dumps(survey, indent=2) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='exit 1 when %s is stale' % SURVEY.relative_to(ROOT))
    args = parser.parse_args(argv)
    with ARGUMENT_SPECS.open() as handle:
        wanted = render(survey_from_argument_specs(yaml.safe_load(handle)))
    target = SURVEY.relative_to(ROOT)
    if args.check:
        current = SURVEY.read_text() if SURVEY.exists() else ''
        if current != wanted:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True),
                                                       str(target), '%s (from the argument specs)' % target))
            print('%s is stale: run .venv/bin/python tests/publish/awx_survey.py' % target)
            return 1
        print('%s is in step with %s' % (target, ARGUMENT_SPECS.relative_to(ROOT)))
        return 0
    SURVEY.write_text(wanted)
    print('wrote %s' % target)
    return 0


if __name__ == '__main__':
    sys.exit(main())
