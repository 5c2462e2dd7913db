"""The drill: each stability anti-pattern put on the example shop, without and with protection.

``manage.py stability_drill`` (``make drill``) runs it; see
``example_project/shop/management/commands/stability_drill.py``.
"""
