"""Built-in CLI verbs. Each module defines ``add_parser(subparsers)``; the parser it adds must set
``func`` (``run(args) -> int``) through ``set_defaults``. ``crossvis.cli`` discovers the modules."""
