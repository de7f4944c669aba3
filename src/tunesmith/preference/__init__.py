"""Preference tuning: pairs (data.py), reward models (reward.py) and DPO (dpo.py) through TRL, demo pairs (recipes.py)."""
