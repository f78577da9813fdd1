"""`ltaug config`: the resolved recipe as commented YAML (each key's help from its field), itself a valid recipe."""

from __future__ import annotations

import typer

from ltaug.cli.app import app
from ltaug.cli.common import RecipeOpt, SetOpt, handle_errors, resolve_recipe
from ltaug.config import recipe_text


@app.command("config", help="Print the resolved recipe (--recipe, then each --set) as YAML, every key with its help "
                            "as a comment; the text is itself a recipe: ltaug config --set seed=1 > my.yaml, then "
                            "--recipe my.yaml.")
@handle_errors
def config_cmd(recipe: RecipeOpt = None, sets: SetOpt = None) -> None:
    # Plain stdout, not the rich console: no wrapping at the terminal's width, no markup, so a redirect is the recipe.
    typer.echo(recipe_text(resolve_recipe(recipe, sets)), nl=False)
