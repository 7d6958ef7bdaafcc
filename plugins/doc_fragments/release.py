# -*- coding: utf-8 -*-
# Copyright (c) graceful.wsgi contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The app directory of the modules that read or move current and the record of switches.
    DOCUMENTATION = r'''
options:
  app_root:
    description:
      - The app's directory, holding C(current), C(releases/) and C(switches.jsonl).
      - An absolute path of names made of letters, digits, C(.), C(_) and C(-).
    type: path
    required: true
'''
