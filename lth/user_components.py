"""A researcher's own model, data and pruning score (issue 26), by one name: everything of
`lth.config.targets` (naming and identity), `lth.models.custom` (the model), `lth.data.custom` (the
data) and `lth.sparsity.custom_scores` (score functions), re-exported.

`from lth.user_components import register_method, ScoreContext` (or `lth.register_method`) is the
researcher's entry; lth's own code imports the four modules above.
"""

from lth.config.targets import (  # noqa: F401
    ARRAYS, Supplied, check, content_hash, describe, dotted_name, identity, import_target, inputs, module_fields)
from lth.data.custom import load_data  # noqa: F401
from lth.models.custom import Adapted, adapt, build_model, head_path, with_head  # noqa: F401
from lth.sparsity.custom_scores import ScoreContext, checked_scores, register_method, score_function  # noqa: F401

__all__ = ["ARRAYS", "Adapted", "ScoreContext", "Supplied", "adapt", "build_model", "check", "checked_scores",
           "content_hash", "describe", "dotted_name", "head_path", "identity", "import_target", "inputs", "load_data",
           "module_fields", "register_method", "score_function", "with_head"]
