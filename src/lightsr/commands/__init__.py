"""The ``lightsr`` subcommands: one module per subcommand, the only place (with :mod:`lightsr.cli`) that knows argparse.

Each module has ``add_arguments(parser)``, which declares its options, and ``run(args) -> int``, which checks
them, calls the library (:mod:`lightsr.upscaler`, :mod:`lightsr.evaluate`, …) and prints; :mod:`lightsr.cli`
imports only the module of the subcommand being run. ``_args`` holds the argparse value types shared by the
subcommands, ``_specs`` the parsing of models named on the command line (``[LABEL=]NAME_OR_PATH``).
Library modules never import from here.
"""
