"""The task-aligned recommender: which SSL pretext fits this modality, task and label budget, and why.

Rules live in ``rules.yaml`` with their sources (the review's findings, Wimalasiri 2026,
arXiv:2605.23995; papers; published recipes). Light on purpose: no torch import.
"""

from monai_ssl_plugin.guide.recommender import (
    Estimate,
    Evidence,
    Exclusion,
    GuideInputError,
    PublishedSetting,
    Query,
    RankedPretext,
    Recommendation,
    ScoreTerm,
    Settings,
    load_measured,
    load_rules,
    recommend,
    valid_choices,
)
from monai_ssl_plugin.guide.render import from_json, recommend_command, to_json, to_table

__all__ = [
    "Estimate",
    "Evidence",
    "Exclusion",
    "GuideInputError",
    "PublishedSetting",
    "Query",
    "RankedPretext",
    "Recommendation",
    "ScoreTerm",
    "Settings",
    "from_json",
    "load_measured",
    "load_rules",
    "recommend",
    "recommend_command",
    "to_json",
    "to_table",
    "valid_choices",
]
