"""Make sure ansible-test can bootstrap pip in its sanity venvs on a host without general internet.

ansible-test downloads get-pip.py from ci-files.testing.ansible.com into
~/.ansible/test/cache/get_pip_<version>.py. When that host is unreachable (as here: only
the package index is), the stand-in next to this script is installed under that name.
Nothing is changed when the cache file exists or the official script can be fetched.
"""

import os
import re
import shutil
import sys
import urllib.request

import ansible_test

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(os.path.dirname(ansible_test.__file__), '_internal', 'python_requirements.py')


def wanted_pip_version():
    with open(REQUIREMENTS) as handle:
        match = re.search(r"pip='([0-9.]+)'", handle.read())
    if not match:
        sys.exit('cannot tell which pip version ansible-test bootstraps (%s changed?)' % REQUIREMENTS)
    return match.group(1)


def main():
    version = wanted_pip_version()
    cache = os.path.expanduser('~/.ansible/test/cache/get_pip_%s.py' % version.replace('.', '_'))
    if os.path.exists(cache):
        return
    url = 'https://ci-files.testing.ansible.com/ansible-test/get-pip-%s.py' % version
    try:
        urllib.request.urlopen(url, timeout=5).close()
        return  # reachable: let ansible-test fetch the real script itself
    except OSError as exc:
        print('%s unreachable (%s); installing the offline stand-in as %s' % (url, exc, cache))
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    shutil.copyfile(os.path.join(HERE, 'ansible_test_pip_bootstrap_standin.py'), cache)


if __name__ == '__main__':
    main()
