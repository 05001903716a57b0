"""Challenges: the YAML spec, challenges and roles in the database, teams, data access.

Modules: ``spec`` (typed spec, parsing with line numbers, Markdown), ``service`` (create,
update, roles, rules acceptance), ``teams`` (teams and invitations), ``data`` (scored case
ids, training and input downloads).
"""
