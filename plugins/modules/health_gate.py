#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: health_gate
short_description: Wait until a URL gives several consecutive good answers, or fail at a deadline
version_added: 0.1.0
description:
  - Requests O(url) again and again until O(successes) answers in a row are good, and fails when O(timeout)
    seconds pass first. Meant as the gate after a reload or a switch of release, before the next host or the
    next step of a deploy.
  - An answer is good when its status is in O(status_code) and, with O(body_regex), its body matches. A refused
    or reset connection, a request that takes longer than O(request_timeout), a TLS failure, another status
    (4xx and 5xx included) or a body that does not match is a failure, and the next good answer starts a new run.
  - The failure message names the URL, the run needed, the best run seen, the number of attempts and the last
    failure (status and start of the body, or why there was no answer).
  - Read-only. It makes the same requests in check mode.
author:
  - graceful.wsgi maintainers (@graceful-wsgi)
extends_documentation_fragment:
  - graceful.wsgi.attributes
  - graceful.wsgi.attributes.info_module
attributes:
  platform:
    platforms: posix
options:
  url:
    description:
      - The URL to GET, C(http://) or C(https://). Redirects are followed, and the final answer is judged.
    type: str
    required: true
  successes:
    description:
      - How many good answers in a row make the gate pass. At least 1.
    type: int
    default: 3
  timeout:
    description:
      - Seconds the gate may take in all. A request in flight at the deadline is cut short, so the task ends
        within about this long.
    type: float
    default: 60
  interval:
    description:
      - Seconds between the end of one request and the start of the next.
    type: float
    default: 0.5
  request_timeout:
    description:
      - Seconds one request may take, connect, headers and body together, before it counts as a failure.
    type: float
    default: 5
  status_code:
    description:
      - The statuses that count as good.
    type: list
    elements: int
    default: [200]
  body_regex:
    description:
      - A Python regular expression that must be found (C(re.search)) in the body of a good answer, for example
        the release that should be serving.
      - Only the first 64 KiB of a body are read.
    type: str
  headers:
    description:
      - Headers sent with every request, for example C(Host) when O(url) names an address.
    type: dict
    default: {}
  validate_certs:
    description:
      - Verify the server's TLS certificate. Set to V(false) only for a self-signed certificate you trust.
    type: bool
    default: true
notes:
  - Proxies set in the environment (C(http_proxy), C(https_proxy)) are used unless C(no_proxy) excludes the host.
seealso:
  - module: graceful.wsgi.uwsgi_reload
  - module: graceful.wsgi.gunicorn_reload
  - module: graceful.wsgi.deploy_lock
'''

EXAMPLES = r'''
- name: Wait for 3 good answers in a row from the new release
  graceful.wsgi.health_gate:
    url: http://127.0.0.1:8000/healthz
    body_regex: "release {{ release }}\\b"
    timeout: 30

- name: Stricter gate through the front proxy, by host name
  graceful.wsgi.health_gate:
    url: https://10.0.0.5/healthz
    headers:
      Host: app.example.com
    validate_certs: false
    successes: 10
    interval: 0.2
    status_code: [200, 204]
'''

RETURN = r'''
url:
  description: The URL requested.
  returned: always
  type: str
  sample: http://127.0.0.1:8000/healthz
attempts:
  description: Requests made.
  returned: always
  type: int
  sample: 7
consecutive:
  description: Good answers in a row at the end; O(successes) when the gate passed.
  returned: always
  type: int
  sample: 3
elapsed:
  description: Seconds from the first request to the end of the gate.
  returned: always
  type: float
  sample: 2.61
status:
  description: Status of the last answer; null when the last attempt got no answer.
  returned: always
  type: int
  sample: 200
body:
  description: Body of the last answer, its first 512 characters; null when the last attempt got no answer.
  returned: always
  type: str
  sample: "ok release v4"
failures:
  description: Attempts that failed.
  returned: always
  type: int
  sample: 4
last_failure:
  description: Why the last failed attempt failed; null when none failed.
  returned: always
  type: str
  sample: "HTTP 503 'unhealthy: release v4'"
msg:
  description: What happened.
  returned: always
  type: str
  sample: "health gate passed: http://127.0.0.1:8000/healthz answered 3 consecutive successes after 7 attempts in
    2.61 s"
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.graceful.wsgi.plugins.module_utils import _health


def main():
    module = AnsibleModule(argument_spec=_health.ARGUMENT_SPEC, supports_check_mode=True)
    passed, result, msg = _health.gate(module.params)
    if not passed:
        module.fail_json(msg=msg, changed=False, **result)
    module.exit_json(msg=msg, changed=False, **result)


if __name__ == '__main__':
    main()
