"""Stand-in for the get-pip.py that ansible-test downloads from ci-files.testing.ansible.com.

That host is not reachable here. ansible-test runs this script inside an empty venv with
get-pip's arguments (pip==X.Y, --no-setuptools, --no-wheel); pip comes from the wheel bundled
with the standard library (ensurepip), then the requested version from the package index.
ensurepip runs in its own process because it blanks pip's configuration (index, CA bundle)
in the environment of the process that calls it.
"""

import subprocess
import sys

GET_PIP_ONLY_OPTIONS = ('--no-setuptools', '--no-wheel')

subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'])
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet'] + args)
