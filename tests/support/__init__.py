"""Test-support helpers that drive real uWSGI instances under real HTTP load."""
