"""YAML recipes: loading with inheritance and overrides, and building components from them."""
from crossvis.recipes.build import build, check_kwargs, component_parameters
from crossvis.recipes.loader import (RecipeError, RecipeNode, apply_overrides, builtin_recipe_dir,
                                     dump_recipe, load_recipe, location_of, parse_overrides,
                                     recipe_from_dict, to_plain)

__all__ = ["build", "check_kwargs", "component_parameters", "RecipeError", "RecipeNode",
           "apply_overrides", "builtin_recipe_dir", "dump_recipe", "load_recipe", "location_of",
           "parse_overrides", "recipe_from_dict", "to_plain"]
