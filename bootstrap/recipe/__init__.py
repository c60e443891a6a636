"""The recipe: YAML read with line numbers, typed models and their checks, the JSON Schema,
placeholders and durations. ``load.load_recipe`` is the way in.
"""
