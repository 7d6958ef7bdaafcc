# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The stats server option shared by the uWSGI modules.
    DOCUMENTATION = r'''
options:
  stats:
    description:
      - The instance's stats server, as set by its C(stats) option.
      - A unix socket path such as C(/run/app/stats.sock), or C(host:port) for a TCP stats server.
      - Run the module as a user allowed to connect to the socket (the instance user or root).
    type: str
'''
