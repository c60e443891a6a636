"""Stand-in written for these tests: command-line config handling that mimics the interface of
karpathy/nanoGPT's configurator.py (no code of that repo).

The rules it follows, which recipes/nanogpt.yaml is written against:
  * an argument without '=' names a Python file; its source runs in the training script's
    global namespace, so whatever it assigns replaces a default;
  * any other argument must be --name=value with exactly one '='; the value is read as a Python
    literal when it is one and kept as a plain string when it is not;
  * the name must already be a global of the training script, and the new value must have
    exactly the same type as the old one.
"""

import ast


def _parse_value(text):
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError):
        return text


def _run_config_file(path, namespace):
    with open(path) as handle:
        source = handle.read()
    print(f"config file {path}:")
    print(source)
    exec(compile(source, path, "exec"), namespace)


def _set_override(arg, namespace):
    if not arg.startswith("--"):
        raise AssertionError(f"expected --name=value, got {arg!r}")
    # a second '=' makes this unpacking fail, which is what the real configurator does too
    name, text = arg[2:].split("=")
    if name not in namespace:
        raise ValueError(f"Unknown config key: {name}")
    value = _parse_value(text)
    current = namespace[name]
    if type(value) is not type(current):
        raise AssertionError(
            f"--{name}: got a {type(value).__name__}, expected a {type(current).__name__}"
        )
    print(f"config: {name} = {value!r}")
    namespace[name] = value


def apply_command_line(argv, namespace):
    """Apply config files and --name=value overrides from ``argv``, in order, to ``namespace``."""
    for arg in argv:
        if "=" in arg:
            _set_override(arg, namespace)
        elif arg.startswith("--"):
            raise AssertionError(f"{arg!r} is neither a config file nor --name=value")
        else:
            _run_config_file(arg, namespace)
